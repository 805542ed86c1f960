"""Pusher channels of a live session: their names, their cached data, and events sent to them once.

Viewers of an encrypted stream join the presence channel
``presence-enc-stream-viewer@<streamer_id>.sd.<session_id>``. Its channel data (what a
viewer's authorization returns) is cached in Redis under ``channel_data_key(channel)``;
whoever writes that cache must use this function too.
"""

from __future__ import annotations

import functools
from typing import Any

from goalhub import send_once
from goalhub_livestream import settings

KIND = "pusher"
CHANNEL_DATA_PREFIX = "pusher:channel-data:"


def stream_viewer_channel(streamer_id: str, session_id: str) -> str:
    """The presence channel of a session's viewers (seed 003)."""
    return f"presence-enc-stream-viewer@{streamer_id}.sd.{session_id}"


def channel_data_key(channel: str) -> str:
    """The Redis key of a channel's cached channel data."""
    return f"{CHANNEL_DATA_PREFIX}{channel}"


def get_pusher() -> Any | None:
    """A ``pusher.Pusher`` client when Pusher is configured, else None (events are only recorded)."""
    if not settings.pusher_configured():
        return None
    import pusher  # imported here: the recorded default needs no client

    options: dict[str, Any] = {"ssl": settings.pusher_ssl(), "timeout": settings.pusher_timeout()}
    if settings.pusher_host():
        options["host"] = settings.pusher_host()
    elif settings.pusher_cluster():
        options["cluster"] = settings.pusher_cluster()
    if settings.pusher_port():
        options["port"] = settings.pusher_port()
    return pusher.Pusher(
        app_id=settings.pusher_app_id(), key=settings.pusher_key(), secret=settings.pusher_secret(), **options
    )


def trigger_once(channel: str, event: str, data: dict[str, Any], key: str, goal_id: str | None = None) -> dict[str, Any]:
    """Trigger ``event`` on ``channel`` unless ``key`` was triggered already; returns the outbound record."""
    client = get_pusher()
    send = None if client is None else functools.partial(client.trigger, channel, event, data)
    return send_once(KIND, key, {"channel": channel, "event": event, "data": data}, send, goal_id=goal_id)
