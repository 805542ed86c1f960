"""``/sessions``: the streamer's live sessions, which goals belong to."""

from __future__ import annotations

import re
import time
from typing import Any

from bson import ObjectId
from flask import Blueprint
from rq import Queue

from goalhub import config, plugins
from goalhub.api import limits
from goalhub.api.access import caller, check_owner, check_reader, creator
from goalhub.api.errors import REDIS_DOWN
from goalhub.api.idempotency import Answer, idempotent
from goalhub.api.payload import json_body, plain
from goalhub.auth import PLATFORM, Principal
from goalhub.errors import BadRequest, Conflict, Forbidden, NotFound
from goalhub.queues import get_queue, job_id
from goalhub.store import get_database
from goalhub.tasks import end_goal
from goalhub.validation import object_id, oid

blueprint = Blueprint("sessions", __name__)

MAX_SOURCES = 32
MAX_SOURCE_ID = 128


# The alphabet of BytePlus RTC room and task ids. Anything else (markup, quotes, spaces)
# is refused at the door: these ids travel to RTC calls, job records and the dashboard.
SOURCE_ID = re.compile(rf"[A-Za-z0-9_@.-]{{1,{MAX_SOURCE_ID}}}")


def _sources(value: Any) -> list[dict[str, str]]:
    """``[{room_id, task_id}]``: RTC sources, ids in RTC's own alphabet (``SOURCE_ID``)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("sources must be a list", code="invalid_type", field="sources")
    if len(value) > MAX_SOURCES:
        raise BadRequest(f"sources has more than {MAX_SOURCES} entries", code="invalid_sources", field="sources")
    clean = []
    for index, source in enumerate(value):
        if not isinstance(source, dict):
            raise BadRequest(f"sources.{index} must be an object", code="invalid_type", field=f"sources.{index}")
        entry = {}
        for key in ("room_id", "task_id"):
            where = f"sources.{index}.{key}"
            item = source.get(key)
            if item is None:
                raise BadRequest(f"{where} is required", code="missing_field", field=where)
            if not isinstance(item, str):
                raise BadRequest(f"{where} must be a string", code="invalid_type", field=where)
            if not SOURCE_ID.fullmatch(item):
                raise BadRequest(f"{where} must be 1 to {MAX_SOURCE_ID} of A-Z a-z 0-9 _ - . @",
                                 code="invalid_source_id", field=where)
            entry[key] = item
        clean.append(entry)
    return clean


def _may_set_sources(principal: Principal) -> None:
    """Only the platform asserts RTC sources: goalhub calls RTC for them with the platform's keys,
    so a streamer naming a room would pause snapshots in rooms that are not theirs."""
    if not principal.has_scope(PLATFORM):
        raise Forbidden("only the platform (a token with the PLATFORM scope) may set RTC sources",
                        code="sources_need_platform", field="sources")


@blueprint.post("/sessions")
def start_session() -> tuple[dict[str, Any], int, dict[str, str]]:
    principal = creator()
    body = json_body(optional=True)
    sources = _sources(body.get("sources"))
    if sources:
        _may_set_sources(principal)

    def work() -> Answer:
        # After the idempotency lookup: a replay gets its stored answer, never a 429.
        limits.limit_user("session", principal, config.settings().RATE_LIMIT_SESSIONS)
        session = {
            "_id": ObjectId(),
            "user": principal.user_id,
            "active": True,
            "sources": sources,
            # The fields the installed goal types keep in a session (their plugins declare them).
            **plugins.session_fields(),
            "started_at": time.time(),
        }
        get_database().sessions.insert_one(session)
        sid = str(session["_id"])
        return Answer(plain(session), 201, {"Location": f"/sessions/{sid}"})

    answer = idempotent(principal.user_id, ("start_session", sources), work)
    return answer.body, answer.status, answer.headers


def _find(session_id: str) -> dict[str, Any]:
    session_id = object_id(session_id, "session_id")
    session = get_database().sessions.find_one({"_id": oid(session_id)})
    if session is None:
        raise NotFound("session not found", code="session_not_found", field="session_id")
    return session


@blueprint.get("/sessions/<session_id>")
def get_session(session_id: str) -> dict[str, Any]:
    principal = caller()
    session = _find(session_id)
    check_reader(principal, session.get("user"), "session")
    return plain(session)


@blueprint.put("/sessions/<session_id>/sources")
def set_sources(session_id: str) -> dict[str, Any]:
    """The platform sets (replaces) a live session's RTC sources."""
    principal = caller()
    sources = _sources(json_body().get("sources"))
    _may_set_sources(principal)
    session = _find(session_id)
    result = get_database().sessions.update_one({"_id": session["_id"], "active": True},
                                                {"$set": {"sources": sources}})
    if result.matched_count != 1:
        raise Conflict("the session has already ended", code="session_ended", field="session_id")
    return plain(get_database().sessions.find_one({"_id": session["_id"]}))


@blueprint.post("/sessions/<session_id>/end")
def end_session(session_id: str) -> dict[str, Any]:
    principal = creator()
    session = _find(session_id)
    check_owner(principal, session.get("user"), "session")
    db = get_database()
    sid = str(session["_id"])
    goal_ids = [str(goal["_id"]) for goal in db.goals.find(
        {"conditions.session_id": sid, "ended_at": {"$exists": False}}, {"_id": 1}
    )]
    ended_at = time.time()
    result = db.sessions.update_one(
        {"_id": session["_id"], "active": True}, {"$set": {"active": False, "ended_at": ended_at}}
    )
    if result.modified_count != 1:
        raise Conflict("the session has already ended", code="session_ended", field="session_id")
    try:
        # One pipeline (MULTI): either every goal's end is queued or none is.
        get_queue("lifecycle").enqueue_many([
            Queue.prepare_data(end_goal, args=(gid,), kwargs={"reason": "session_ended"},
                               job_id=job_id("session-end", gid))
            for gid in goal_ids
        ])
    except REDIS_DOWN:
        db.sessions.update_one(
            {"_id": session["_id"], "ended_at": ended_at}, {"$set": {"active": True}, "$unset": {"ended_at": ""}}
        )
        raise
    return {**plain(db.sessions.find_one({"_id": session["_id"]})), "ending_goals": goal_ids}
