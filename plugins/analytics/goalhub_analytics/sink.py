"""Where analytics events go: an HTTP endpoint when configured, else nowhere (recorded only)."""

from __future__ import annotations

from typing import Any

import requests

from goalhub_analytics import settings


class HttpSink:
    """POSTs each event as JSON; the ``Idempotency-Key`` header lets the receiver drop a resend."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"GOALHUB_ANALYTICS_SINK must be an http(s):// URL, not {url!r}")
        self.url = url
        self.timeout = timeout

    def send(self, key: str, event: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(self.url, json=event, headers={"Idempotency-Key": key}, timeout=self.timeout)
        response.raise_for_status()
        return {"status": response.status_code}


def get_sink() -> HttpSink | None:
    """The configured sink, or None: events are then only recorded."""
    url = settings.analytics_sink()
    return HttpSink(url, settings.analytics_timeout()) if url else None
