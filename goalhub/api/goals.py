"""``/goals``: create a goal of a plugin's type, read it with its receiver outcomes, end it.

Creation (seed 000 ``create_exclusive_goal``, seed 003 ``create_show_goal``) runs:
auth -> body -> goal type -> idempotency -> rate limit -> ``GoalType.prepare`` (reads only) -> the
accepted goal stored (state ``creating``) with the draft's claims, each one atomic update
(``goalhub.outbox``) -> ``create_goal`` enqueued -> ``202``. Whatever fails before the 202
withdraws the record and releases the claims, so a refused or failed request leaves nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bson import ObjectId
from flask import Blueprint, request

from goalhub import config, logs, outbox, plugins, tracing
from goalhub.api import limits
from goalhub.api.access import caller, check_owner, check_reader, creator
from goalhub.api.idempotency import Answer, idempotent
from goalhub.api.payload import json_body, plain
from goalhub.auth import Principal
from goalhub.errors import BadRequest, Conflict, NotFound, Unprocessable
from goalhub.goaltypes import CreateRequest, GoalType
from goalhub.queues import get_queue, job_id
from goalhub.store import get_database
from goalhub.tasks import LIFECYCLE_PENDING, end_goal
from goalhub.validation import object_id, oid

log = logging.getLogger(__name__)

blueprint = Blueprint("goals", __name__)

# Outcome fields a client sees: a failure's class and code (goalhub.redaction); its text
# (``error``), tracebacks and stored arguments stay with the operator.
OUTCOME_FIELDS = ("_id", "event", "receiver", "plugin", "dist", "version", "status", "attempts",
                  "error_class", "error_code", "result", "duration_ms", "queued_at", "started_at", "finished_at")


# How long an end request's claim holds before another request may end the goal again.
END_CLAIM_SECONDS = 120


def installed_goal_types() -> dict[str, GoalType]:
    """Goal types contributed by the loaded plugins, by name (a clash: see ``plugins.goal_types``)."""
    return plugins.goal_types()


def _requested_type() -> GoalType:
    # Both spellings of the seeds: ?type= (seed 000) and ?goal_type= (seed 003).
    names = {request.args.get(key) for key in ("type", "goal_type")} - {None}
    if not names or names == {""}:
        raise BadRequest("the goal type is required: ?type=<name>", code="missing_goal_type", field="type")
    if len(names) > 1:
        raise BadRequest("type and goal_type name different goal types", code="ambiguous_goal_type", field="type")
    name = str(names.pop())
    types = installed_goal_types()
    if name not in types:
        installed = ", ".join(sorted(types)) or "none"
        raise BadRequest(f"unknown goal type {name[:64]!r}; installed: {installed}",
                         code="unknown_goal_type", field="type")
    return types[name]


@blueprint.post("/goals")
@blueprint.post("/goal")
def create_goal() -> tuple[dict[str, Any], int, dict[str, str]]:
    principal = creator()
    body = json_body()
    goal_type = _requested_type()
    answer = idempotent(principal.user_id, ("create_goal", goal_type.name, body),
                        lambda: _create(principal, goal_type, body))
    return answer.body, answer.status, answer.headers


def _create(principal: Principal, goal_type: GoalType, body: dict[str, Any]) -> Answer:
    # Limited here, after the idempotency record was looked up: a replay of an accepted request
    # gets its stored 202, never a 429 that a client could read as "not created" (issue 22).
    limits.limit_user("goal", principal, config.settings().RATE_LIMIT_GOALS)
    db = get_database()
    goal_id = str(ObjectId())
    draft = goal_type.prepare(
        CreateRequest(goal_id=goal_id, user_id=principal.user_id, body=body, db=db, now=time.time())
    )
    _check_open_goals(db, draft.conditions.get("session_id"))
    # Stored (state ``creating``) with its claims before the 202: goalhub.outbox.
    document = draft.document(goal_id)
    outbox.accept(db, document, goal_type=goal_type.name, claims=draft.claims)
    try:
        outbox.enqueue(goal_id, fresh=True, goal=document, goal_type=goal_type.name)
    except BaseException:
        # Redis refused the job: the request fails (503) and leaves nothing, unless a relay
        # published the record meanwhile (then it is created, and the 202 is the truth).
        if outbox.withdraw(db, goal_id):
            raise
        log.warning("goal %s: its enqueue failed but a relay published it", goal_id, extra={"goal_id": goal_id})
    return Answer({"goal_id": goal_id}, 202, {"Location": f"/goals/{goal_id}"})


def _check_open_goals(db: Any, session_id: str | None) -> None:
    """A session holds at most GOALHUB_MAX_OPEN_GOALS goals that have not ended, counting those
    being created (422 beyond)."""
    cap = config.settings().MAX_OPEN_GOALS
    if not cap or not session_id:
        return
    creating = outbox.open_in_session(db, session_id)  # a created goal's record may linger a moment
    stored = db.goals.count_documents({"conditions.session_id": session_id, "ended_at": {"$exists": False},
                                       "_id": {"$nin": [oid(i) for i in creating]}},
                                      limit=max(cap - len(creating), 1))
    if len(creating) + stored >= cap:
        raise Unprocessable(f"the session already has {cap} open goals; end some first",
                            code="too_many_open_goals", field="context.session_id")


def _own_goal(goal_id: str, principal: Principal, *, read: bool = False) -> dict[str, Any]:
    goal_id = object_id(goal_id, "goal_id")
    goal = get_database().goals.find_one({"_id": oid(goal_id)})
    if goal is None:
        raise NotFound("goal not found", code="goal_not_found", field="goal_id")
    owner = (goal.get("metadata") or {}).get("user_id")
    (check_reader if read else check_owner)(principal, owner, "goal")
    return goal


def _goal_being_created(goal_id: str, principal: Principal) -> dict[str, Any] | None:
    """Between the 202 and the ``create_goal`` run, the goal is its accepted record in the
    store (goalhub.outbox): ``creating``, or ``failed`` with the reason it could not be created."""
    record = outbox.find(get_database(), goal_id)
    if record is None:
        return None
    goal = record.get("goal") or {}
    check_reader(principal, (goal.get("metadata") or {}).get("user_id"), "goal")
    shown = {"_id": goal_id, "_cls": goal.get("_cls"), "state": record["state"],
             "accepted_at": record.get("accepted_at"), "outcomes": [], "events": []}
    if record["state"] == "failed":
        shown["reason"] = record.get("reason")
    return shown


@blueprint.get("/goals/<goal_id>")
@blueprint.get("/goal/<goal_id>")
def get_goal(goal_id: str) -> dict[str, Any]:
    principal = caller()
    try:
        goal = _own_goal(goal_id, principal, read=True)
    except NotFound:
        pending = _goal_being_created(object_id(goal_id, "goal_id"), principal)
        if pending is None:
            raise
        return pending
    gid = str(goal["_id"])
    outcomes = [
        {name: outcome[name] for name in OUTCOME_FIELDS if name in outcome}
        for outcome in get_database().outcomes.find({"goal_id": gid})
    ]
    outcomes.sort(key=lambda o: (o.get("event", ""), o.get("plugin", ""), o.get("receiver", "")))
    # Each event delivered for the goal, with the receivers it went to: its outcomes are all
    # in ``outcomes`` once it is listed here (goalhub.dispatch writes it last).
    events = [{name: e[name] for name in ("event", "receivers", "delivered_at")}
              for e in get_database().events.find({"goal_id": gid})]
    return {**plain(goal), "outcomes": plain(outcomes), "events": plain(events)}


@blueprint.post("/goals/<goal_id>/end")
@blueprint.post("/goal/<goal_id>/end")
def end(goal_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    goal = _own_goal(goal_id, creator())
    if "ended_at" in goal:
        raise Conflict("the goal has already ended", code="goal_ended", field="goal_id")
    gid = str(goal["_id"])
    db = get_database()
    # One atomic claim: of concurrent ends, one request queues the end and the others get 409.
    # A claim whose end never ran (its job lost with Redis) may be taken again after a while.
    requested_at = time.time()
    claimed = db.goals.update_one(
        {"_id": goal["_id"], "ended_at": {"$exists": False},
         "$or": [{"end_requested_at": {"$exists": False}},
                 {"end_requested_at": {"$lt": requested_at - END_CLAIM_SECONDS}}]},
        {"$set": {"end_requested_at": requested_at}, "$addToSet": {LIFECYCLE_PENDING: "end-request"}},
    )
    if claimed.modified_count != 1:
        raise Conflict("the goal is already ending", code="goal_ending", field="goal_id")
    try:
        # On the lifecycle queue, like every end: the worker sends goal.ended to the receivers. In
        # the goal's trace (linked to this request's).
        with tracing.span("end requested", {"goalhub.goal_id": gid}, kind="producer", parent=goal.get(tracing.FIELD)):
            get_queue("lifecycle").enqueue_call(
                end_goal, args=(gid,), kwargs={"reason": "ended"}, job_id=job_id("end-request", gid),
                meta=logs.job_meta(),
            )
    except BaseException:
        db.goals.update_one({"_id": goal["_id"], "end_requested_at": requested_at},
                            {"$unset": {"end_requested_at": ""}, "$pull": {LIFECYCLE_PENDING: "end-request"}})
        raise
    return {"goal_id": gid, "status": "ending"}, 202, {"Location": f"/goals/{gid}"}
