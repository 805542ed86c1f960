"""The snapshot plugin's settings, read from ``GOALHUB_RTC_*`` environment variables.

Like goalhub's own settings (``goalhub.setting``), values are read when asked for, never cached at import. With
``GOALHUB_RTC_ACCESS_KEY`` and ``GOALHUB_RTC_SECRET_KEY`` set, RTC calls go to BytePlus;
without them each call is only recorded in the ``outbound`` collection.
"""

from __future__ import annotations

import json
from typing import Any

from goalhub import setting


def rtc_endpoint() -> str:
    """``GOALHUB_RTC_ENDPOINT``: the BytePlus OpenAPI address (scheme and host, port allowed)."""
    return setting("GOALHUB_RTC_ENDPOINT", "https://open.byteplusapi.com")


def rtc_access_key() -> str | None:
    """``GOALHUB_RTC_ACCESS_KEY``: the OpenAPI access key (AK)."""
    return setting("GOALHUB_RTC_ACCESS_KEY")


def rtc_secret_key() -> str | None:
    """``GOALHUB_RTC_SECRET_KEY``: the OpenAPI secret key (SK); it signs requests, it is never sent."""
    return setting("GOALHUB_RTC_SECRET_KEY")


def rtc_app_id() -> str | None:
    """``GOALHUB_RTC_APP_ID``: the RTC application's AppId, sent in every call's body."""
    return setting("GOALHUB_RTC_APP_ID")


def rtc_region() -> str:
    """``GOALHUB_RTC_REGION``: the signing region."""
    return setting("GOALHUB_RTC_REGION", "ap-singapore-1")


def rtc_version() -> str:
    """``GOALHUB_RTC_VERSION``: the OpenAPI version of the snapshot actions."""
    return setting("GOALHUB_RTC_VERSION", "2022-06-01")


def rtc_timeout() -> float:
    """``GOALHUB_RTC_TIMEOUT``: seconds to wait for the RTC OpenAPI (connect and read)."""
    return float(setting("GOALHUB_RTC_TIMEOUT", "5"))


def start_snapshot_config() -> dict[str, Any]:
    """``GOALHUB_RTC_START_SNAPSHOT_CONFIG``: a JSON object merged into every ``StartSnapshot``
    body (``ImageConfig``, ``StorageConfig``, ...), so snapshots restart as the operator set them up."""
    raw = setting("GOALHUB_RTC_START_SNAPSHOT_CONFIG")
    if raw is None:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("GOALHUB_RTC_START_SNAPSHOT_CONFIG must be a JSON object")
    return value


def rtc_configured() -> bool:
    """Whether RTC calls are real (both keys set) rather than only recorded."""
    return bool(rtc_access_key() and rtc_secret_key())
