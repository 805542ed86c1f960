"""Who is calling: the bearer token's principal, scopes, and ownership checks; and the one
access check of the operators' pages (the RQ dashboard, goalhub's own pages, ``/metrics``)."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import g, request

from goalhub import config
from goalhub.api import limits
from goalhub.api.observe import client_address
from goalhub.auth import ADMIN, CREATOR, Principal, bearer_principal, require_scope
from goalhub.errors import Forbidden, Unauthorized


def caller() -> Principal:
    """The verified caller (401 without a valid bearer token); verified once per request."""
    principal = g.get("principal")
    if principal is None:
        principal = bearer_principal(request.headers.get("Authorization"))
        # Seeds' ``g.user``: the streamer making the request.
        g.principal = principal
    return principal


def creator() -> Principal:
    """The caller, who must hold the CREATOR scope (403 otherwise)."""
    principal = caller()
    require_scope(principal, CREATOR)
    return principal


def check_owner(principal: Principal, owner: str | None, what: str) -> None:
    """403 unless ``owner`` is the caller (an ADMIN may read anything, see ``may_read``)."""
    if owner != principal.user_id:
        raise Forbidden(f"this {what} belongs to another streamer", code=f"{what}_not_owned")


def check_reader(principal: Principal, owner: str | None, what: str) -> None:
    if principal.has_scope(ADMIN):
        return
    check_owner(principal, owner, what)


def require_dashboard_access() -> None:
    """The operators' pages (``/rq``, ``/rq/goalhub``, ``/metrics``): HTTP Basic with
    ``GOALHUB_DASHBOARD_USER``/``GOALHUB_DASHBOARD_PASSWORD`` (refused when they are unset;
    failed logins throttled per user name and client address, so another client's failures
    never refuse a correct password), or a bearer token with the ADMIN scope."""
    header = request.headers.get("Authorization", "")
    scheme = header.split(" ", 1)[0].lower()
    if scheme == "bearer":
        g.principal = bearer_principal(header)  # the request line's user, too
        require_scope(g.principal, ADMIN)
        return
    if scheme != "basic":
        raise Unauthorized("the dashboard needs a password or an ADMIN bearer token", code="token_missing")
    user, password = config.settings().DASHBOARD_USER, config.settings().DASHBOARD_PASSWORD
    if not user or not password:
        raise Forbidden("dashboard passwords are not configured (GOALHUB_DASHBOARD_USER/PASSWORD)",
                        code="dashboard_disabled")
    given = request.authorization
    given_user = (given.username or "") if given else ""
    given_password = (given.password or "") if given else ""
    # Throttled per (user name, client address): another client's failures never count here.
    who = f"{given_user}\n{client_address()}"
    limits.login_blocked(who)  # 429 once this user failed too often from this address
    # Both compared, in constant time, whatever the first one says.
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    if not (user_ok and password_ok):
        limits.login_failed(who)
        raise Unauthorized("wrong dashboard user or password", code="dashboard_credentials")
    limits.login_succeeded(who)
    g.operator = given_user  # the request line's user


def require_same_origin() -> None:
    """An action on the operators' pages must come from those pages (CSRF); a bearer token passes."""
    # Browsers resend Basic credentials on cross-site requests: an action must show
    # that it comes from the dashboard's own pages (CSRF).
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return  # a bearer token is never sent by a browser on its own
    if not origin or urlsplit(origin).netloc != request.host:
        raise Forbidden("cross-origin dashboard actions are refused", code="cross_origin")
