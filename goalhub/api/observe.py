"""Every request: its id (``x-request-id``, or a new one), one structured log line, and the
HTTP metrics by route and status. The id is answered in the ``X-Request-Id`` header and
travels into every job the request enqueues (``goalhub.logs``)."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from goalhub import logs, metrics

log = logging.getLogger("goalhub.api.requests")


def _start() -> None:
    g.request_id = logs.new_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[logs.REQUEST_ID_HEADER] = request_id
    seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.http_request(request.method, route, response.status_code, seconds)
    if not route.startswith(("/rq/", "/docs/")) or response.status_code >= 400:
        log.info("%s %s %s", request.method, request.path, response.status_code,
                 extra={"method": request.method, "path": request.path, "route": route,
                        "status": response.status_code, "duration_ms": round(seconds * 1000, 2)})
    return response


def register(app: Flask) -> None:
    # First in, last out: every other hook (the dashboard's guard too) sees the request id.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
