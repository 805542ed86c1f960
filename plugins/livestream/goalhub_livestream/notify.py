"""Notifications to a session's viewers: POSTed to a notification service when configured, else recorded."""

from __future__ import annotations

import functools
from typing import Any

from goalhub import HttpSink, send_once
from goalhub_livestream import settings

KIND = "notification"


def get_notifier() -> HttpSink | None:
    url = settings.notify_sink()
    return HttpSink(url, settings.notify_timeout(), setting="GOALHUB_NOTIFY_SINK") if url else None


def notify_once(key: str, notification: dict[str, Any], goal_id: str | None = None) -> dict[str, Any]:
    """Send (or only record) one notification unless ``key`` was sent already; returns the outbound record."""
    notifier = get_notifier()
    send = None if notifier is None else functools.partial(notifier.send, f"{KIND}:{key}", notification)
    return send_once(KIND, key, notification, send, goal_id=goal_id)
