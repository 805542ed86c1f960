"""Notifications to a session's viewers: POSTed to a notification service when configured, else recorded."""

from __future__ import annotations

import functools
from typing import Any

import requests

from goalhub.outbound import send_once
from goalhub_livestream import settings

KIND = "notification"


class HttpNotifier:
    """POSTs each notification as JSON; ``Idempotency-Key`` lets the service drop a resend."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"GOALHUB_NOTIFY_SINK must be an http(s):// URL, not {url!r}")
        self.url = url
        self.timeout = timeout

    def send(self, key: str, notification: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(self.url, json=notification, headers={"Idempotency-Key": key}, timeout=self.timeout)
        response.raise_for_status()
        return {"status": response.status_code}


def get_notifier() -> HttpNotifier | None:
    url = settings.notify_sink()
    return HttpNotifier(url, settings.notify_timeout()) if url else None


def notify_once(key: str, notification: dict[str, Any], goal_id: str | None = None) -> dict[str, Any]:
    """Send (or only record) one notification unless ``key`` was sent already; returns the outbound record."""
    notifier = get_notifier()
    send = None if notifier is None else functools.partial(notifier.send, f"{KIND}:{key}", notification)
    return send_once(KIND, key, notification, send, goal_id=goal_id)
