"""The BytePlus RTC OpenAPI client for the snapshot actions, and its recorded default.

Requests are built and signed by BytePlus's official Python SDK (``byteplus-sdk``: its
generic ``Service`` and ``SignerV4``, the HMAC-SHA256 signature of the OpenAPI: ``X-Date``,
``X-Content-Sha256`` and ``Authorization: HMAC-SHA256 Credential=<AK>/<date>/<region>/rtc/request,
SignedHeaders=..., Signature=...``). The SDK ships RTC only as an example, so the two
actions are declared here, as its example does.

Every call goes through ``goalhub.send_once`` under a key naming the action, the
goal and the source, so a redelivered event sends nothing twice. The recorded default and
the real client store the same payload; only the transport differs.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any
from urllib.parse import urlsplit

from goalhub import send_once
from goalhub_snapshot import settings

STOP = "StopSnapshot"
START = "StartSnapshot"
ACTIONS = (STOP, START)
SERVICE = "rtc"
# BytePlus RTC's alphabet for room and task ids.
RTC_ID = re.compile(r"[A-Za-z0-9_@.-]{1,128}")


class RtcError(RuntimeError):
    """The RTC OpenAPI answered with an error (HTTP 200 with ``ResponseMetadata.Error``)."""


def build_request(action: str, room_id: str, task_id: str) -> dict[str, Any]:
    """The payload of one snapshot call: action, version and JSON body (no credentials)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown RTC action {action!r}; one of {ACTIONS}")
    for name, value in (("room id", room_id), ("task id", task_id)):
        # The API admits only RTC's alphabet; a stored id outside it is refused, never echoed.
        if not isinstance(value, str) or not RTC_ID.fullmatch(value):
            raise ValueError(f"the {name} is not in RTC's alphabet (A-Z a-z 0-9 _ - . @, 1 to 128)")
    body: dict[str, Any] = {"AppId": settings.rtc_app_id(), "RoomId": room_id, "TaskId": task_id}
    if action == START:
        body = {**settings.start_snapshot_config(), **body}
    return {"action": action, "version": settings.rtc_version(), "body": body}


class RtcClient:
    """A real client for the RTC OpenAPI at ``endpoint`` (``https://host`` or ``http://host:port``)."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str, timeout: float = 5.0) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"GOALHUB_RTC_ENDPOINT must be http(s)://host[:port], not {endpoint!r}")
        self.scheme = parts.scheme
        self.host = parts.netloc
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.timeout = timeout

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST one action, signed; returns the decoded response or raises."""
        # Imported here: the recorded default needs no SDK, and importing it is slow.
        from byteplus_sdk.ApiInfo import ApiInfo
        from byteplus_sdk.base.Service import Service
        from byteplus_sdk.Credentials import Credentials
        from byteplus_sdk.ServiceInfo import ServiceInfo

        if not request["body"].get("AppId"):
            raise ValueError("GOALHUB_RTC_APP_ID must be set to call the RTC OpenAPI")
        action = request["action"]
        service_info = ServiceInfo(
            self.host,
            {"Accept": "application/json"},
            Credentials(self.access_key, self.secret_key, SERVICE, self.region),
            self.timeout,
            self.timeout,
            scheme=self.scheme,
        )
        api_info = {action: ApiInfo("POST", "/", {"Action": action, "Version": request["version"]}, {}, {})}
        service = Service(service_info, api_info)
        # The SDK's constructor picks up BYTEPLUS_* variables or ~/.byteplus; ours win.
        service.set_ak(self.access_key)
        service.set_sk(self.secret_key)
        # A non-200 answer raises in the SDK with the response text as the message.
        response = json.loads(service.json(action, {}, dict(request["body"])))
        error = (response.get("ResponseMetadata") or {}).get("Error")
        if error:
            raise RtcError(f"{action}: {error.get('Code')} {error.get('Message')}")
        return response


def get_client() -> RtcClient | None:
    """The real client when RTC keys are configured, else None (calls are only recorded)."""
    if not settings.rtc_configured():
        return None
    return RtcClient(
        settings.rtc_endpoint(),
        settings.rtc_access_key() or "",
        settings.rtc_secret_key() or "",
        settings.rtc_region(),
        settings.rtc_timeout(),
    )


def call_key(action: str, goal_id: str, room_id: str, task_id: str) -> str:
    """The ``send_once`` key of one call: one per action, goal and source."""
    return f"{action}:{goal_id}:{room_id}:{task_id}"


def call_once(action: str, goal_id: str, room_id: str, task_id: str) -> dict[str, Any]:
    """Make (or only record) one snapshot call unless it was made already; returns the outbound record."""
    request = build_request(action, room_id, task_id)
    client = get_client()
    send = None if client is None else functools.partial(client.send, request)
    return send_once(SERVICE, call_key(action, goal_id, room_id, task_id), request, send, goal_id=goal_id)
