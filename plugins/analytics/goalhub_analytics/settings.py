"""The analytics plugin's settings, read from the environment when asked for (``goalhub.setting``)."""

from __future__ import annotations

from goalhub import setting


def analytics_sink() -> str | None:
    """``GOALHUB_ANALYTICS_SINK``: an ``http(s)://`` URL that receives each event as a JSON POST
    (with an ``Idempotency-Key`` header); unset means events are only recorded in ``outbound``."""
    return setting("GOALHUB_ANALYTICS_SINK")


def analytics_timeout() -> float:
    """``GOALHUB_ANALYTICS_TIMEOUT``: seconds to wait for the sink (connect and read)."""
    return float(setting("GOALHUB_ANALYTICS_TIMEOUT", "5"))
