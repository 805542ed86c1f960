"""Where analytics events go: an HTTP endpoint when configured, else nowhere (recorded only)."""

from __future__ import annotations

from goalhub import HttpSink
from goalhub_analytics import settings


def get_sink() -> HttpSink | None:
    """The configured sink, or None: events are then only recorded."""
    url = settings.analytics_sink()
    return HttpSink(url, settings.analytics_timeout(), setting="GOALHUB_ANALYTICS_SINK") if url else None
