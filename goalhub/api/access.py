"""Who is calling: the bearer token's principal, scopes, and ownership checks."""

from __future__ import annotations

from flask import g, request

from goalhub.auth import Principal, bearer_principal, require_scope
from goalhub.errors import Forbidden

CREATOR = "CREATOR"
ADMIN = "ADMIN"
# The platform's own service scope: only it asserts which RTC rooms a session streams from.
PLATFORM = "PLATFORM"


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
