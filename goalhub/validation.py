"""Checks shared by every goal type's ``prepare``: ids, levels, times, the caller's session.

Each check either returns the clean value or raises an error from ``goalhub.errors``
naming the field. Ids are checked to be 24-hex strings before they reach any query, so
an operator object such as ``{"$ne": null}`` is a 400 and never a query.
"""

from __future__ import annotations

import math
import re
from typing import Any

from bson import ObjectId

from goalhub.errors import BadRequest, Forbidden, NotFound, Unprocessable

_HEX24 = re.compile(r"[0-9a-f]{24}")
# Targets are seconds or coins; anything beyond this is a typo or an attack.
MAX_TARGET = 10**9
MAX_LEVELS = 20
# Epoch seconds between 2001 and 2286: rules out milliseconds sent as seconds.
MIN_EPOCH, MAX_EPOCH = 1e9, 1e10


def object_id(value: Any, field: str) -> str:
    """A 24-hex id string (lower-cased), or 400."""
    if not isinstance(value, str) or not _HEX24.fullmatch(value.lower()):
        raise BadRequest(f"{field} must be a 24-character hex id", code="invalid_id", field=field)
    return value.lower()


def oid(value: str) -> ObjectId:
    """The ObjectId for an id string already checked by ``object_id``."""
    return ObjectId(value)


def mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{field} must be an object", code="invalid_type", field=field)
    return value


def required(body: dict[str, Any], key: str, field: str | None = None) -> Any:
    if key not in body or body[key] is None:
        raise BadRequest(f"{field or key} is required", code="missing_field", field=field or key)
    return body[key]


def number(value: Any, field: str) -> float:
    # bool is an int in Python; JSON true is not a number here.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{field} must be a finite number", code="invalid_number", field=field)
    return value


def levels(value: Any, field: str = "levels") -> list[dict[str, Any]]:
    """``[{"target": positive number}, ...]``, at least one level."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{field} must be a non-empty list", code="invalid_levels", field=field)
    if len(value) > MAX_LEVELS:
        raise BadRequest(f"{field} has more than {MAX_LEVELS} levels", code="invalid_levels", field=field)
    clean = []
    for index, level in enumerate(value):
        where = f"{field}.{index}.target"
        level = mapping(level, f"{field}.{index}")
        target = number(required(level, "target", where), where)
        if target <= 0 or target > MAX_TARGET:
            raise BadRequest(f"{where} must be positive and at most {MAX_TARGET}", code="invalid_target", field=where)
        clean.append({"target": target})
    return clean


def timestamp(value: Any, field: str, *, nullable: bool = True) -> float | None:
    """Epoch seconds (a float with milliseconds is fine), or None where allowed."""
    if value is None:
        if nullable:
            return None
        raise BadRequest(f"{field} is required", code="missing_field", field=field)
    seconds = number(value, field)
    if not MIN_EPOCH <= seconds <= MAX_EPOCH:
        raise BadRequest(f"{field} must be epoch seconds", code="invalid_timestamp", field=field)
    return float(seconds)


def window(body: dict[str, Any], *, nbf_required: bool = False, exp_required: bool = False) -> tuple[float | None, float | None]:
    """``nbf`` and ``exp`` from the body, with ``exp`` after ``nbf``."""
    nbf = timestamp(body.get("nbf"), "nbf", nullable=not nbf_required)
    exp = timestamp(body.get("exp"), "exp", nullable=not exp_required)
    if nbf is not None and exp is not None and exp <= nbf:
        raise BadRequest("exp must be after nbf", code="invalid_window", field="exp")
    return nbf, exp


def own_active_session(db: Any, session_id: str, user_id: str, field: str = "context.session_id") -> dict[str, Any]:
    """The caller's live session: 404 unknown, 403 another streamer's, 422 ended."""
    session = db.sessions.find_one({"_id": oid(session_id)})
    if session is None:
        raise NotFound("session not found", code="session_not_found", field=field)
    if session.get("user") != user_id:
        raise Forbidden("session belongs to another streamer", code="session_not_owned", field=field)
    if not session.get("active"):
        raise Unprocessable("session has ended", code="session_ended", field=field)
    return session
