"""Checks shared by every goal type's ``prepare``: ids, levels, times, the caller's session.

Each check either returns the clean value or raises an error from ``goalhub.errors``
naming the field. Ids are checked to be 24-hex strings before they reach any query, so
an operator object such as ``{"$ne": null}`` is a 400 and never a query.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from goalhub.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from goalhub.goaltypes import Claim

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
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise BadRequest(f"{field} must be a finite number", code="invalid_number", field=field)
    return value


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # JSON allows integers like 10**400, beyond any float: a 400, not a 500
        return False


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


def linked_goal(db: Any, goal_id: str, field: str, *, goal_class: str, session_id: str) -> dict[str, Any]:
    """The goal a new one builds on (a trigger, a funding goal): 404 unknown, 422 when it is
    of another class or of another session."""
    goal = db.goals.find_one({"_id": oid(goal_id)})
    if goal is None:
        raise NotFound(f"{field} names no goal", code="goal_not_found", field=field)
    if goal.get("_cls") != goal_class:
        raise Unprocessable(f"{field} is not a {goal_class}", code="wrong_goal_class", field=field)
    if (goal.get("conditions") or {}).get("session_id") != session_id:
        raise Unprocessable(f"{field} belongs to another session", code="goal_of_another_session", field=field)
    return goal


def binding_claim(goal: dict[str, Any], bound_key: str, claim_key: str, field: str, goal_id: str) -> Claim:
    """409 ``already_bound`` when ``goal`` is bound (``context.<bound_key>``) or claimed by
    another request (``claims.<claim_key>``); otherwise the :class:`Claim` that reserves it
    for ``goal_id``, which the core takes atomically so that one concurrent request wins."""
    bound = (goal.get("context") or {}).get(bound_key)
    claimed = (goal.get("claims") or {}).get(claim_key)
    if bound is not None or claimed not in (None, goal_id):
        raise Conflict(f"{field} is already bound to another goal", code="already_bound", field=field)
    return Claim(
        collection="goals",
        filter={"_id": goal["_id"], f"context.{bound_key}": {"$exists": False}},
        field=f"claims.{claim_key}",
        message=f"{field} is already bound to another goal",
        error_field=field,
    )


@dataclass(frozen=True)
class GoalBody:
    """What every goal type's body holds: levels, the context with its session, the window."""

    levels: list[dict[str, Any]]
    context: dict[str, Any]
    session_id: str
    nbf: float | None
    exp: float | None


def goal_body(body: Any, now: float, *, exp_required: bool = False) -> GoalBody:
    """``{levels, context: {session_id, ...}, nbf, exp}`` checked for shape only (no reads), so
    a type can check its own ids before anything is looked up. A given ``exp`` is after ``nbf``
    and in the future; ``exp_required`` for countdowns."""
    body = mapping(body, "body")
    clean_levels = levels(required(body, "levels"))
    context = mapping(required(body, "context"), "context")
    session_id = object_id(required(context, "session_id", "context.session_id"), "context.session_id")
    nbf, exp = window(body, exp_required=exp_required)
    if exp is not None and exp <= now:
        raise BadRequest("exp must be in the future", code="invalid_window", field="exp")
    return GoalBody(levels=clean_levels, context=context, session_id=session_id, nbf=nbf, exp=exp)


def body_schema(context: dict[str, dict[str, Any]], *, context_required: tuple[str, ...] = ("session_id",),
                nbf_required: bool = False, exp: str = "optional") -> dict[str, Any]:
    """The JSON Schema of a goal body ``{levels, context, nbf, exp}`` for ``GoalType.body_schema``
    (the OpenAPI document): ``context`` maps the context's keys to their schemas, ``exp`` is
    ``"optional"``, ``"required"`` or ``"absent"``. It documents what ``goal_body`` checks."""
    epoch = {"type": "number", "minimum": MIN_EPOCH, "maximum": MAX_EPOCH, "description": "epoch seconds"}
    properties: dict[str, Any] = {
        "levels": {"type": "array", "minItems": 1, "maxItems": MAX_LEVELS, "items": {
            "type": "object", "required": ["target"],
            "properties": {"target": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TARGET}}}},
        "context": {"type": "object", "required": list(context_required), "properties": context},
        "nbf": epoch if nbf_required else {"anyOf": [epoch, {"type": "null"}]},
    }
    required = ["levels", "context"] + (["nbf"] if nbf_required else [])
    if exp == "required":
        properties["exp"] = {**epoch, "description": "epoch seconds, after nbf"}
        required.append("exp")
    elif exp == "optional":
        properties["exp"] = {"anyOf": [epoch, {"type": "null"}]}
    else:
        properties["exp"] = {"type": "null", "description": "this goal type has no exp"}
    return {"type": "object", "required": required, "properties": properties}


OBJECT_ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-f]{24}$"}
