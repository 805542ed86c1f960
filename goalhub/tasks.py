"""RQ jobs: top-level functions, each safe to run twice.

``create_goal`` stores a goal under the id the API allocated before enqueuing it, then
sends ``goal.created``, whose receivers run inline in the same job (``goalhub.dispatch``):
in the common path a goal costs this one job. ``activate_goal`` and ``end_goal`` are the
lifecycle jobs that rq-scheduler runs at ``nbf`` and ``exp``; one that is due already when
it is scheduled from inside a job runs there and then. ``run_receiver`` (in
``goalhub.dispatch``) is the job of one receiver: a retry, or an isolated receiver.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, overload

from bson import ObjectId
from pymongo.errors import DuplicateKeyError
from rq import get_current_job
from rq.job import Job

from goalhub import metrics, outbox, plugins, signals, tracing
from goalhub.goaltypes import TEST_FIRE
from goalhub.logs import current_request_id, job_meta
from goalhub.queues import get_queue, get_scheduler, job_id
from goalhub.store import get_database

# rq-scheduler keeps whole seconds, so a lifecycle job may start up to a second early;
# the job waits out the rest itself. Beyond this it is rescheduled instead of waiting.
MAX_EARLY_WAIT = 2.0

log = logging.getLogger(__name__)


def created_arguments(goal: dict[str, Any]) -> dict[str, Any]:
    """The seeds' arguments of ``goal.created`` for a stored goal."""
    return {
        "goal_id": str(goal["_id"]),
        "active": goal["active"],
        "_cls": goal["_cls"],
        "conditions": goal["conditions"],
        "context": goal["context"],
        "levels": goal["levels"],
        "nbf": goal.get("nbf"),
        "exp": goal.get("exp"),
        "streamer_id": (goal.get("metadata") or {}).get("user_id"),
        "test_fire": bool(goal.get(TEST_FIRE)),
    }


def enqueue_create_goal(goal: dict[str, Any], *, fresh: bool = False) -> str:
    """Accept a goal document whose ``_id`` is already allocated (``goalhub.outbox``: stored,
    state ``creating``, no claims) and enqueue ``create_goal`` for it. The API accepts with
    its claims through ``goalhub.outbox`` itself."""
    goal_id = outbox.accept(get_database(), goal)
    outbox.enqueue(goal_id, fresh=fresh, goal=goal)
    return goal_id


def create_jobs() -> Iterator[Job]:
    """Every ``create_goal`` job Redis holds, whatever its state (a scan: for operators' tools,
    ``goalhub outcomes --stale`` and the reconciliation after a restore)."""
    connection = get_queue().connection
    namespace = Job.redis_job_namespace_prefix
    for key in connection.scan_iter(match=f"{namespace}{job_id('create', '')}*", count=500):
        job = Job.fetch_many([key.decode()[len(namespace):]], connection=connection)[0]
        if job is not None:
            yield job


@overload
def create_goal(goal: dict[str, Any]) -> str: ...
@overload
def create_goal(goal: str) -> str | None: ...


def create_goal(goal: dict[str, Any] | str) -> str | None:
    """Write the goal (once, whatever the number of runs), then send ``goal.created``.

    ``goal``: an accepted goal's id (the job ``goalhub.outbox`` enqueues: the document is its
    ``creating`` record's), or a goal document to store as it is (a direct call). Returns the
    goal id; None when the accepted record is gone (withdrawn) or failed."""
    db = get_database()
    record = None
    if isinstance(goal, str):
        record = outbox.find(db, goal)
        if record is None or record["state"] != "creating":
            stored = db.goals.find_one({"_id": ObjectId(goal)})
            if stored is None:  # withdrawn by its request, or failed: nothing to create
                log.info("create_goal: goal %s is no longer accepted", goal, extra={"goal_id": goal})
                return None
            return _created(stored)  # created already (a rerun): send again, receivers dedupe
        reason = _cannot_create(record)
        if reason and not db.goals.count_documents({"_id": record["_id"]}, limit=1):
            outbox.fail(db, record, reason)
            return None
        fields: dict[str, Any] = record["goal"]
    else:
        fields = goal
    document = {**fields, "_id": ObjectId(fields["_id"]), "created_at": time.time()}
    if current_request_id():
        document["request_id"] = current_request_id()
    if tracing.enabled():
        tracing.annotate({"goalhub.goal_id": fields["_id"]})
        if tracing.FIELD not in document:  # accepted outside a trace: the goal's trace starts with this job
            document.update(tracing.stamp())
    try:
        db.goals.insert_one(document)
        metrics.goal_created(document["_cls"])
        log.info("create_goal stored %s %s", document["_cls"], fields["_id"], extra={"goal_id": fields["_id"]})
    except DuplicateKeyError:
        # A second run (retry, redelivery): the goal is there; send again, receivers dedupe.
        document = db.goals.find_one({"_id": document["_id"]})
    _created(document)
    if record is not None:
        outbox.created(db, fields["_id"])  # only now: goal.created's outcome records are written
    return str(document["_id"])


def _created(document: dict[str, Any]) -> str:
    signals.leaderboards.send("goal.created", **created_arguments(document))
    return str(document["_id"])


def _cannot_create(record: dict[str, Any]) -> str | None:
    """Why an accepted goal can no longer be created (its goal type is not installed), or None."""
    goal_type = record.get("goal_type")
    if goal_type and goal_type not in plugins.goal_types():
        return f"goal type {goal_type!r} is not installed"
    return None


def activate_goal(goal_id: str) -> bool:
    """Seed 000: update ``{_id, active: False}`` to ``active: True``; an active goal is left alone."""
    db = get_database()
    tracing.annotate({"goalhub.goal_id": goal_id})
    goal = _not_before(db, "activate", goal_id, "nbf")
    if goal is None:
        return False
    activated_at = time.time()
    update: dict[str, Any] = {"$set": {"active": True, "activated_at": activated_at}}
    pending = "activate" in _pending_kinds(goal)
    if pending:  # its job ran: no longer the reconciler's (in the same write)
        update["$pull"] = {LIFECYCLE_PENDING: "activate"}
    result = db.goals.update_one(
        {"_id": ObjectId(goal_id), "active": False, "ended_at": {"$exists": False}}, update)
    if pending and result.modified_count != 1:  # active or ended already: nothing left to do either
        db.goals.update_one({"_id": ObjectId(goal_id)}, {"$pull": {LIFECYCLE_PENDING: "activate"}})
    if result.modified_count == 1:
        metrics.activation(activated_at - (goal.get("nbf") or activated_at))
        log.info("activate_goal activated %s", goal_id, extra={"goal_id": goal_id})
    return result.modified_count == 1


def end_goal(goal_id: str, reason: str = "ended") -> bool:
    """End a goal (inactive, ``ended_at``), cancel its pending activation, send ``goal.ended``.

    Safe to run twice: the goal is ended once, and the signal's receivers dedupe.
    Returns whether this run ended it.
    """
    db = get_database()
    tracing.annotate({"goalhub.goal_id": goal_id, "goalhub.end_reason": reason})
    _id = ObjectId(goal_id)
    if reason == "expired" and _not_before(db, "end", goal_id, "exp", reason=reason) is None:
        return False
    result = db.goals.update_one(
        {"_id": _id, "ended_at": {"$exists": False}},
        # Ended: no activation or end is pending any more (the reconciler skips ended goals anyway).
        {"$set": {"active": False, "ended_at": time.time(), "end_reason": reason}, "$unset": {LIFECYCLE_PENDING: ""}},
    )
    goal = db.goals.find_one({"_id": _id})
    if goal is None:
        return False
    cancel("activate", goal_id)
    if reason != "expired":
        cancel("end", goal_id)
    signals.leaderboards.send(
        "goal.ended",
        goal_id=goal_id,
        _cls=goal["_cls"],
        conditions=goal["conditions"],
        context=goal["context"],
        reason=goal.get("end_reason", reason),
        test_fire=bool(goal.get(TEST_FIRE)),
    )
    return result.modified_count == 1


def _not_before(db: Any, kind: str, goal_id: str, field: str, **kwargs: Any) -> dict[str, Any] | None:
    """Wait until the goal's ``field`` time; returns ``{field}`` of the goal, or None if the goal is
    gone or the job was rescheduled."""
    goal = db.goals.find_one({"_id": ObjectId(goal_id)}, {field: 1, LIFECYCLE_PENDING: 1})
    if goal is None:
        return None
    early = (goal.get(field) or 0) - time.time()
    if early > MAX_EARLY_WAIT:
        schedule(kind, goal_id, goal[field], **kwargs)
        return None
    if early > 0:
        time.sleep(early)
    return goal


def schedule(kind: str, goal_id: str, at: float | None, **kwargs: Any) -> str:
    """Run ``activate_goal`` or ``end_goal`` for ``goal_id`` at epoch ``at`` (now if past or None).

    Due already and called inside an RQ job (the lifecycle receiver, inline in ``create_goal``),
    it runs here, in this job: never before ``at``, and without a job of its own."""
    function = {"activate": activate_goal, "end": end_goal}[kind]
    jid = job_id(kind, goal_id)
    if (at is None or at <= time.time()) and get_current_job() is not None:
        with tracing.span(function.__name__, {"goalhub.goal_id": goal_id}):  # what its job's span would show
            function(goal_id, **kwargs)
        return jid
    # Marks the goal as scheduled: the reconciler (goalhub.scheduler) finds it if the job is lost.
    get_database().goals.update_one({"_id": ObjectId(goal_id)},
                                    {"$set": {_marker(kind): at or time.time()}, "$addToSet": {LIFECYCLE_PENDING: kind}})
    if at is None or at <= time.time():
        get_queue("lifecycle").enqueue_call(function, args=(goal_id,), kwargs=kwargs, job_id=jid, meta=job_meta())
    else:
        get_scheduler().enqueue_at(datetime.fromtimestamp(at, tz=UTC), function, goal_id, job_id=jid,
                                   meta=job_meta(), **kwargs)
    return jid


def cancel(kind: str, goal_id: str) -> None:
    get_scheduler().cancel(job_id(kind, goal_id))


# --- the lifecycle marker: ``lifecycle.<kind>_at`` on a goal whose activation or end is scheduled --
# Written by ``schedule``, removed by ``unmark`` (a job cancelled on purpose), read by the
# reconciler (``goalhub.scheduler``) through ``scheduled_before``. ``lifecycle.pending`` lists
# the kinds whose job has not run yet (``activate``, ``end``, ``end-request``: an end asked for
# over the API): the reconciler looks only at the goals it names, through an index, so its work
# follows the goals still pending, not every goal ever created. A job that ran takes its kind
# out; an ended goal has none left.

LIFECYCLE_KINDS = ("activate", "end")
LIFECYCLE_PENDING = "lifecycle.pending"


def _pending_kinds(goal: dict[str, Any]) -> list[str]:
    return list((goal.get("lifecycle") or {}).get("pending") or ())


def _marker(kind: str) -> str:
    return f"lifecycle.{kind}_at"


def scheduled_before(kind: str, due: float) -> dict[str, Any]:
    """The query for goals whose ``kind`` job is pending and was scheduled for ``due`` or earlier."""
    return {LIFECYCLE_PENDING: kind, _marker(kind): {"$lte": due}}


def unmark(kind: str, goal_id: str) -> None:
    """The goal's ``kind`` job was cancelled on purpose: the reconciler leaves the goal alone."""
    get_database().goals.update_one({"_id": ObjectId(goal_id)}, {
        "$unset": {_marker(kind): ""}, "$set": {f"lifecycle.{kind}_cancelled_at": time.time()},
        "$pull": {LIFECYCLE_PENDING: kind}})
