"""Every request: its id (``x-request-id``, or a new one), one structured log line, the
HTTP metrics by route and status, and, when tracing (``goalhub.tracing``), its span. The id is answered in the ``X-Request-Id`` header and
travels into every job the request enqueues (``goalhub.logs``).

The log line names the client's address (``client_address``: the connection's peer, or the
trusted proxy's header, ``GOALHUB_TRUSTED_PROXY_HEADER``) and the user (the bearer token's
subject, or the dashboard user). Method and path are bounded: a client may send either up to
64 KiB long."""

from __future__ import annotations

import ipaddress
import logging
import time

from flask import Flask, Response, g, request

from goalhub import config, logs, metrics, store, tracing

log = logging.getLogger("goalhub.api.requests")


def _start() -> None:
    g.request_id = logs.new_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    g.request_started = time.perf_counter()
    if tracing.enabled():
        g.trace_span = _request_span()


# Not traced: probes, scrapes, the dashboard's pages and the API docs (noise in every trace store).
UNTRACED = ("/healthz", "/readyz", "/metrics", "/rq", "/docs", "/static", "/openapi.json")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def _request_span() -> tracing.Span | None:
    """The request's span (``goalhub.tracing``): named ``METHOD route`` (the rule, never the
    client's path), the child of the client's ``traceparent`` when it sent one. Every job the
    request enqueues is its child."""
    route = request.url_rule.rule if request.url_rule is not None else None
    if route is not None and route.startswith(UNTRACED):
        return None
    method = request.method if request.method in HTTP_METHODS else "_OTHER"
    return tracing.start(f"{method} {route}" if route else method, {
        "http.request.method": method, "http.route": route, "url.path": request.path,
        "goalhub.request_id": g.request_id}, kind="server", parent=tracing.incoming(request.headers))


def _end_trace(exc: BaseException | None) -> None:
    span = g.pop("trace_span", None)
    if span is not None:
        span.close(exc)


MAX_LOGGED_METHOD = 16
MAX_LOGGED_PATH = 512


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def client_address() -> str:
    """The client's address: the last address in ``GOALHUB_TRUSTED_PROXY_HEADER`` when that is
    set and holds one, else the connection's peer."""
    header = config.settings().TRUSTED_PROXY_HEADER
    if header:
        forwarded = request.headers.get(header, "").rsplit(",", 1)[-1].strip()
        forwarded = forwarded.removeprefix("for=").strip('"').removeprefix("[").split("]")[0]
        try:
            return str(ipaddress.ip_address(forwarded))
        except ValueError:
            pass  # absent or not an address: the peer is all that is known
    return request.remote_addr or "unknown"


def _user() -> str:
    principal = g.get("principal")
    return principal.user_id if principal is not None else g.get("operator") or "-"


def _finish(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[logs.REQUEST_ID_HEADER] = request_id
    seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.http_request(request.method, route, response.status_code, seconds)
    metrics.store_writes("api", *store.take_write_stats())  # this process's since the last take, this request's among them
    span = g.get("trace_span")
    if span is not None:
        span.set({"http.response.status_code": response.status_code})
        if response.status_code >= 500:
            span.error(f"HTTP {response.status_code}")
    if not route.startswith(("/rq/", "/docs/")) or response.status_code >= 400:
        method = _bounded(request.method, MAX_LOGGED_METHOD)
        path = _bounded(request.path, MAX_LOGGED_PATH)
        log.info("%s %s %s", method, path, response.status_code,
                 extra={"method": method, "path": path, "route": route, "status": response.status_code,
                        "duration_ms": round(seconds * 1000, 2), "client": client_address(), "user": _user()})
    return response


def register(app: Flask) -> None:
    # First in, last out: every other hook (the dashboard's guard too) sees the request id.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_end_trace)
