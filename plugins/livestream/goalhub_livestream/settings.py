"""The livestream plugin's settings, read from the environment when asked for (``goalhub.setting``).

Pusher events are real when ``GOALHUB_PUSHER_APP_ID``, ``GOALHUB_PUSHER_KEY`` and
``GOALHUB_PUSHER_SECRET`` are all set, and only recorded in ``outbound`` otherwise;
notifications are real when ``GOALHUB_NOTIFY_SINK`` is set.
"""

from __future__ import annotations

from goalhub import setting


def pusher_app_id() -> str | None:
    """``GOALHUB_PUSHER_APP_ID``: the Pusher Channels app id."""
    return setting("GOALHUB_PUSHER_APP_ID")


def pusher_key() -> str | None:
    """``GOALHUB_PUSHER_KEY``: the app key."""
    return setting("GOALHUB_PUSHER_KEY")


def pusher_secret() -> str | None:
    """``GOALHUB_PUSHER_SECRET``: the app secret; it signs requests, it is never sent."""
    return setting("GOALHUB_PUSHER_SECRET")


def pusher_cluster() -> str | None:
    """``GOALHUB_PUSHER_CLUSTER``: the app's cluster (e.g. ``ap1``), for Pusher's hosted API."""
    return setting("GOALHUB_PUSHER_CLUSTER")


def pusher_host() -> str | None:
    """``GOALHUB_PUSHER_HOST``: a host speaking the Pusher HTTP API (a self-hosted server); wins over the cluster."""
    return setting("GOALHUB_PUSHER_HOST")


def pusher_port() -> int | None:
    """``GOALHUB_PUSHER_PORT``: that host's port (default: 443 with SSL, 80 without)."""
    port = setting("GOALHUB_PUSHER_PORT")
    return int(port) if port else None


def pusher_ssl() -> bool:
    """``GOALHUB_PUSHER_SSL``: ``false`` for plain HTTP (a local server); default true."""
    return setting("GOALHUB_PUSHER_SSL", "true").lower() not in ("0", "false", "no", "off")


def pusher_timeout() -> float:
    """``GOALHUB_PUSHER_TIMEOUT``: seconds to wait for the Pusher API."""
    return float(setting("GOALHUB_PUSHER_TIMEOUT", "5"))


def pusher_configured() -> bool:
    return bool(pusher_app_id() and pusher_key() and pusher_secret())


def stream_authorized_event() -> str:
    """``GOALHUB_PUSHER_STREAM_AUTHORIZED_EVENT``: the event name viewers' clients listen for."""
    return setting("GOALHUB_PUSHER_STREAM_AUTHORIZED_EVENT", "stream-authorized")


def notify_sink() -> str | None:
    """``GOALHUB_NOTIFY_SINK``: an ``http(s)://`` URL of the notification service; each notification
    is POSTed there as JSON with an ``Idempotency-Key`` header. Unset: recorded only."""
    return setting("GOALHUB_NOTIFY_SINK")


def notify_timeout() -> float:
    """``GOALHUB_NOTIFY_TIMEOUT``: seconds to wait for the notification service."""
    return float(setting("GOALHUB_NOTIFY_TIMEOUT", "5"))
