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
results or descriptions in the first place. Failed Basic logins are throttled per user name
and client address (``GOALHUB_DASHBOARD_LOGIN_LIMIT``; the address from
``GOALHUB_TRUSTED_PROXY_HEADER`` behind a reverse proxy), so an outsider's failures never
refuse an operator's correct password; a correct login clears its own failures. Unknown
jobs, registries and instances are clean 404s, bad page parameters 400s, empty queues
no-ops: never 500s (issue 22).
"""

from __future__ import annotations

import html
import json
from typing import Any

import rq_dashboard
from flask import Flask, Response, current_app, jsonify, request
from rq import Queue

from goalhub.api import csp, ops
from goalhub.api.access import require_dashboard_access, require_same_origin
from goalhub.connection import get_redis, redis_url
from goalhub.errors import BadRequest, NotFound
from goalhub.queues import all_queues, get_queue
from goalhub.redaction import redact

URL_PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"
# rq-dashboard routes that change state even on GET.
_CHANGING_GETS = {f"{BLUEPRINT}.requeue_all"}
# rq-dashboard's routes that name one job.
_JOB_ROUTES = {f"{BLUEPRINT}.{name}" for name in ("job_view", "job_info", "delete_job_view", "requeue_job_view")}
# What rq-dashboard's URL parameters may be (anything else reaches it as a 500).
_REGISTRIES = frozenset({"queued", "failed", "deferred", "started", "finished", "scheduled", "canceled"})
_ORDERS = frozenset({"asc", "dsc"})
_NUMBERS = {"per_page": 200, "page": 1_000_000}  # its page-size field allows 1-200


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
    _check_parameters(request.view_args or {})
    return _missing(connection)


def _check_parameters(args: dict[str, Any]) -> None:
    """404 for an instance or registry that does not exist, 400 for a page, size or order that
    cannot be: rq-dashboard would answer them with a 500 (issue 22)."""
    if args.get("instance_number", 0) != 0:  # goalhub's one Redis is instance 0
        raise NotFound("no such Redis instance", code="not_found", field="instance_number")
    if "registry_name" in args and args["registry_name"] not in _REGISTRIES:
        raise NotFound("no such job registry", code="not_found", field="registry_name")
    if "order" in args and args["order"] not in _ORDERS:
        raise BadRequest("order is asc or dsc", code="invalid_value", field="order")
    for name, most in _NUMBERS.items():
        value = str(args.get(name, 1))
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= most):
            raise BadRequest(f"{name} is a whole number from 1 to {most}", code="invalid_value", field=name)


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
    """Every ``/rq`` answer (goalhub's own pages under ``/rq/goalhub`` too): nosniff, no framing,
    a Content-Security-Policy with a nonce on the inline script (``goalhub.api.csp``);
    rq-dashboard's JSON HTML-escaped and redacted."""
    if not request.path.startswith(URL_PREFIX):
        return response
    dashboard = request.blueprint == BLUEPRINT
    if dashboard and not response.direct_passthrough and response.mimetype == "application/json" \
            and response.status_code == 200:
        response.set_data(json.dumps(_escaped(response.get_json()), separators=(",", ":")))
    # 'unsafe-eval' for rq-dashboard's pages only: its underscore templates compile with new
    # Function(). The nonce admits its one inline script; inline event handlers never run.
    return csp.harden(response, unsafe_eval=dashboard)


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
