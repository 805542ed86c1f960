"""The RQ dashboard (``rq-dashboard``) under ``/rq``, never open to anyone who reaches the port.

rq-dashboard ships no authentication of its own (it leaves that to the host app), so
every request to its blueprint, static files included, passes ``_guard`` first: HTTP
Basic with ``GOALHUB_DASHBOARD_USER``/``GOALHUB_DASHBOARD_PASSWORD`` (refused when they
are unset), or a bearer token with the ADMIN scope. The dashboard reads goalhub's Redis,
and goalhub's queues are listed even before their first job.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

import rq_dashboard
from flask import Flask, Response, current_app, request
from rq import Queue

from goalhub import config
from goalhub.api.access import ADMIN
from goalhub.auth import bearer_principal, require_scope
from goalhub.connection import get_redis, redis_url
from goalhub.errors import Forbidden, Unauthorized
from goalhub.queues import all_queues

URL_PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"
# rq-dashboard routes that change state even on GET.
_CHANGING_GETS = {f"{BLUEPRINT}.requeue_all"}


def register(app: Flask) -> None:
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    app.before_request(_guard)
    app.after_request(_basic_challenge)


def _guard() -> None:
    # App-level hooks run before the blueprint's own (which picks the Redis connection).
    if request.blueprint != BLUEPRINT:
        return
    _authenticate()
    if request.method not in ("GET", "HEAD") or request.endpoint in _CHANGING_GETS:
        _same_origin()
    url = redis_url()
    current_app.config["RQ_DASHBOARD_REDIS_URL"] = (url,)
    connection = get_redis()
    current_app.redis_conn = connection  # type: ignore[attr-defined]  # rq-dashboard's convention
    connection.sadd(Queue.redis_queues_keys, *(queue.key for queue in all_queues()))


def _authenticate() -> None:
    header = request.headers.get("Authorization", "")
    scheme = header.split(" ", 1)[0].lower()
    if scheme == "bearer":
        require_scope(bearer_principal(header), ADMIN)
        return
    if scheme != "basic":
        raise Unauthorized("the dashboard needs a password or an ADMIN bearer token", code="token_missing")
    user, password = config.dashboard_user(), config.dashboard_password()
    if not user or not password:
        raise Forbidden("dashboard passwords are not configured (GOALHUB_DASHBOARD_USER/PASSWORD)",
                        code="dashboard_disabled")
    given = request.authorization
    given_user = (given.username or "") if given else ""
    given_password = (given.password or "") if given else ""
    # Both compared, in constant time, whatever the first one says.
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    if not (user_ok and password_ok):
        raise Unauthorized("wrong dashboard user or password", code="dashboard_credentials")


def _same_origin() -> None:
    # Browsers resend Basic credentials on cross-site requests: an action must show
    # that it comes from the dashboard's own pages (CSRF).
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return  # a bearer token is never sent by a browser on its own
    if not origin or urlsplit(origin).netloc != request.host:
        raise Forbidden("cross-origin dashboard actions are refused", code="cross_origin")


def _basic_challenge(response: Response) -> Response:
    # Offer Basic beside Bearer, so that a browser asks for the dashboard password.
    if request.path.startswith(URL_PREFIX) and response.status_code == 401:
        response.headers.add("WWW-Authenticate", 'Basic realm="goalhub RQ dashboard", charset="UTF-8"')
    return response
