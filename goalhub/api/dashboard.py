"""The RQ dashboard (``rq-dashboard``) under ``/rq``, never open to anyone who reaches the port.

rq-dashboard ships no authentication of its own (it leaves that to the host app), so
every request to its blueprint, static files included, passes ``_guard`` first
(``goalhub.api.access.require_dashboard_access``): HTTP
Basic with ``GOALHUB_DASHBOARD_USER``/``GOALHUB_DASHBOARD_PASSWORD`` (refused when they
are unset), or a bearer token with the ADMIN scope. The dashboard reads goalhub's Redis,
and goalhub's queues are listed even before their first job.

Hardening (issue 12): rq-dashboard's pages insert job data with ``innerHTML`` (underscore
templates' ``<%= %>``), so a job description, result or exception text carrying markup would
run in an admin's browser, same-origin with every dashboard action. Three layers stop it:
every string in the dashboard's JSON is HTML-escaped (and secrets redacted) before it leaves;
the pages are sent with a Content-Security-Policy that runs only the dashboard's own scripts
(a per-response nonce on its inline script, no inline event handlers, nothing from elsewhere)
and ``X-Content-Type-Options: nosniff``; and goalhub puts no user-supplied text in job
results or descriptions in the first place. Failed Basic logins are throttled per client
address (``GOALHUB_DASHBOARD_LOGIN_LIMIT``). Unknown jobs and empty queues are clean 404s
and no-ops, not 500s.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
from typing import Any

import rq_dashboard
from flask import Flask, Response, current_app, jsonify, request
from rq import Queue

from goalhub.api import ops
from goalhub.api.access import require_dashboard_access, require_same_origin
from goalhub.connection import get_redis, redis_url
from goalhub.errors import NotFound
from goalhub.queues import all_queues, get_queue
from goalhub.redaction import redact

URL_PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"
# rq-dashboard routes that change state even on GET.
_CHANGING_GETS = {f"{BLUEPRINT}.requeue_all"}
# rq-dashboard's routes that name one job.
_JOB_ROUTES = {f"{BLUEPRINT}.{name}" for name in ("job_view", "job_info", "delete_job_view", "requeue_job_view")}
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)(?=[\s>])")


def register(app: Flask) -> None:
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    app.before_request(_guard)
    app.after_request(_basic_challenge)
    app.after_request(_harden)
    app.before_request(_jobs_tab_on_goalhub_queue)
    app.after_request(_add_nav_links)
    # /rq without its slash: werkzeug would redirect to /rq/, and Chromium drops the address's
    # user:password@ on that redirect (a blank page behind a password prompt). rq-dashboard's
    # own queues view answers here instead, behind the same guard.
    # (An endpoint named in rq-dashboard's blueprint: its guard and hooks apply, and its
    # templates' url_for(".queues_overview") resolves.)
    app.add_url_rule("/rq", endpoint="rq_dashboard.goalhub_queues_without_slash", view_func=_rq_root)


def _guard() -> Response | None:
    # App-level hooks run before the blueprint's own (which picks the Redis connection).
    if request.blueprint != BLUEPRINT:
        return None
    require_dashboard_access()
    if request.method not in ("GET", "HEAD") or request.endpoint in _CHANGING_GETS:
        require_same_origin()
    url = redis_url()
    current_app.config["RQ_DASHBOARD_REDIS_URL"] = (url,)
    connection = get_redis()
    current_app.redis_conn = connection  # type: ignore[attr-defined]  # rq-dashboard's convention
    connection.sadd(Queue.redis_queues_keys, *(queue.key for queue in all_queues()))
    return _missing(connection)


def _missing(connection: Any) -> Response | None:
    """Answer what rq-dashboard would turn into a 500: an unknown job (404), compacting a queue
    that has no list in Redis (nothing to compact: OK)."""
    args = request.view_args or {}
    if request.endpoint in _JOB_ROUTES and not connection.exists(f"rq:job:{args.get('job_id', '')}"):
        raise NotFound("no such job", code="job_not_found", field="job_id")
    if request.endpoint == f"{BLUEPRINT}.compact_queue":
        if not connection.exists(Queue(args.get("queue_name", ""), connection=connection).key):
            return jsonify(status="OK")
    return None


def _basic_challenge(response: Response) -> Response:
    # Offer Basic beside Bearer, so that a browser asks for the dashboard password.
    if request.path.startswith(URL_PREFIX) and response.status_code == 401:
        response.headers.add("WWW-Authenticate", 'Basic realm="goalhub RQ dashboard", charset="UTF-8"')
    return response


def _harden(response: Response) -> Response:
    """Headers on every ``/rq`` answer; HTML-escaped, redacted JSON; a nonce on the inline script."""
    if not request.path.startswith(URL_PREFIX):
        return response
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.blueprint != BLUEPRINT or response.direct_passthrough:
        return response
    if response.mimetype == "application/json" and response.status_code == 200:
        response.set_data(json.dumps(_escaped(response.get_json()), separators=(",", ":")))
    nonce = base64.b64encode(secrets.token_bytes(16)).decode()
    if response.mimetype == "text/html":
        response.set_data(_INLINE_SCRIPT.sub(f'<script nonce="{nonce}"'.encode(), response.get_data()))
    response.headers["Content-Security-Policy"] = content_security_policy(nonce)
    return response


def content_security_policy(nonce: str) -> str:
    # 'unsafe-eval': rq-dashboard's underscore templates compile with new Function(); the
    # nonce admits its one inline script; inline event handlers (onerror=...) never run.
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' 'nonce-{nonce}' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def _escaped(value: Any) -> Any:
    """Every string HTML-escaped (rq-dashboard inserts them as markup) and redacted."""
    if isinstance(value, str):
        return html.escape(redact(value), quote=True)
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


# --- rq-dashboard, made to fit goalhub: links to goalhub's own pages (goalhub.api.ops), its Jobs
# tab on goalhub's queue, /rq without its slash ------------------------------------------------

_NAV_ANCHOR = '<ul class="navbar-nav mr-auto">'
_NAV_LINKS = (f'<li class="nav-item"><a href="{ops.PREFIX}/" class="nav-link">goalhub</a></li>'
              f'<li class="nav-item"><a href="{ops.PREFIX}/scheduled" class="nav-link">Scheduled</a></li>')


def _jobs_tab_on_goalhub_queue() -> None:
    # rq-dashboard's Jobs tab opens on a queue named "default" that goalhub never uses.
    if request.endpoint == "rq_dashboard.jobs_overview" and request.view_args is not None \
            and request.view_args.get("queue_name") is None:
        request.view_args["queue_name"] = get_queue().name


def _add_nav_links(response: Response) -> Response:
    if request.blueprint == "rq_dashboard" and response.mimetype == "text/html" and not response.direct_passthrough:
        html = response.get_data(as_text=True)
        if _NAV_ANCHOR in html:
            response.set_data(html.replace(_NAV_ANCHOR, _NAV_ANCHOR + _NAV_LINKS, 1))
    return response


def _rq_root() -> Any:
    return current_app.view_functions["rq_dashboard.queues_overview"](instance_number=0)
