"""Accepted goals, kept in the store until they are created: the transactional outbox.

A goal answered ``202`` is a record of the ``accepted`` collection first (``accept``): the goal
document ``create_goal`` will write, the goal type that accepted it, and the claims made for
it, in state ``creating``. The API writes it, then makes the claims (each one atomic update
that names the goal), then enqueues ``create_goal`` with the goal's id (``enqueue``). The RQ
job is how the goal gets created soon; the record is what makes it certain.

This is the transactional-outbox pattern with a polling publisher (as in microservices.io's
"Transactional outbox" / "Polling publisher", and the outbox tables Debezium relays): the
record is written by the request in the system of record, and a relay that runs anyway
(``requeue_accepted``: the reconciler on the scheduler holding the lock, and every worker's
registry maintenance) publishes again each record whose job is gone. The job id is
``create-<goal_id>`` and ``create_goal`` stores the goal with one insert guarded by its
``_id``, so however often a record is published the goal is created once.

``create_goal`` deletes the record (``created``) only after ``goal.created`` was delivered:
its receivers' outcome records are written by then, so a Redis loss at any moment leaves
either the record (published again; a second delivery runs no receiver twice) or final work.

A record that can no longer be created (its goal type was uninstalled since, or its job
failed ``MAX_PUBLISHES`` times) is ``fail``-ed: its claims are released, it stays in state
``failed`` with the reason (what ``GET /goals/<id>`` shows), and ``goalhub_goals_failed_total``
counts it. No record stays ``creating`` for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from rq.job import Job, JobStatus
from rq.results import Result

from goalhub import config, metrics, tracing
from goalhub.connection import get_redis
from goalhub.errors import Conflict
from goalhub.goaltypes import Claim
from goalhub.queues import PENDING, enqueue_once, get_queue, job_id

log = logging.getLogger(__name__)

COLLECTION = "accepted"
# The job that creates an accepted goal, named rather than imported: goalhub.tasks (a higher
# layer) imports this module. RQ resolves the name in the worker.
CREATE_GOAL = "goalhub.tasks.create_goal"
# A record published this many times whose goal is still not created is failed.
MAX_PUBLISHES = 5
# How many records one relay run looks at (the oldest first).
BATCH = 500


def create_job_id(goal_id: str) -> str:
    return job_id("create", goal_id)


def accept(db: Any, goal: dict[str, Any], *, goal_type: str | None = None,
           claims: Iterable[Claim] = (), now: float | None = None) -> str:
    """Store ``goal`` (its ``_id`` allocated already) as accepted, state ``creating``, then make
    ``claims`` for it; a claim someone else holds (``Conflict``) withdraws the record and
    releases the claims made. Returns the goal id."""
    goal_id = str(goal["_id"])
    claims = list(claims)
    # The goal's trace context (the request's span) goes with it: what re-creates its jobs later joins it.
    record = {"_id": ObjectId(goal_id), "state": "creating", "goal": {**goal, "_id": goal_id, **tracing.stamp()},
              "goal_type": goal_type, "session_id": (goal.get("conditions") or {}).get("session_id"),
              "user_id": (goal.get("metadata") or {}).get("user_id"), "accepted_at": now or time.time(),
              "publishes": 0, "claims": [_plain_claim(c) for c in claims]}
    db[COLLECTION].insert_one(record)
    made: list[Claim] = []
    try:
        for claim in claims:
            make_claim(db, claim, goal_id)
            made.append(claim)
    except BaseException:
        withdraw(db, goal_id, made)
        raise
    return goal_id


def enqueue(goal_id: str, *, fresh: bool = False, goal: dict[str, Any] | None = None,
            goal_type: str | None = None) -> None:
    """Publish: enqueue ``create_goal(goal_id)`` as ``create-<goal_id>`` (unless one is pending).
    ``goal`` (the accepted document) rides in the job's meta: what a restore of an older backup
    accepts again from Redis (``goalhub.backup.reconcile``); the job itself reads the store."""
    meta = {"goal": {**goal, "_id": goal_id}, "goal_type": goal_type} if goal is not None else None
    enqueue_once(get_queue(), CREATE_GOAL, goal_id, job_id=create_job_id(goal_id), fresh=fresh,
                 description=f"create_goal {goal_id}", meta=meta)


def withdraw(db: Any, goal_id: str, claims: Iterable[Claim] | None = None) -> bool:
    """Take back a record no relay has published yet (its request failed before answering):
    delete it and release its claims. False when a relay published it already: it will be
    created, and its claims hold for it."""
    record = db[COLLECTION].find_one_and_delete({"_id": ObjectId(goal_id), "state": "creating", "publishes": 0})
    if record is None:
        return False
    release_claims(db, list(claims) if claims is not None else [_claim(c) for c in record["claims"]], goal_id)
    return True


def make_claim(db: Any, claim: Claim, goal_id: str) -> None:
    """Bind ``claim.field`` to the new goal in one atomic update; 409 if someone got there first."""
    result = db[claim.collection].update_one(
        {**claim.filter, claim.field: {"$exists": False}}, {"$set": {claim.field: goal_id}}
    )
    if result.modified_count != 1:
        raise Conflict(claim.message, code="already_bound", field=claim.error_field)


def release_claims(db: Any, claims: list[Claim], goal_id: str) -> None:
    for claim in reversed(claims):
        # Matches only what this goal bound: the goal id is its own.
        match = {"_id": claim.filter["_id"]} if "_id" in claim.filter else {}
        try:
            db[claim.collection].update_one({**match, claim.field: goal_id}, {"$unset": {claim.field: ""}})
        except Exception:
            log.exception("could not release claim %s.%s of goal %s", claim.collection, claim.field, goal_id)


def _plain_claim(claim: Claim) -> dict[str, Any]:
    return {"collection": claim.collection, "filter": claim.filter, "field": claim.field}


def _claim(stored: dict[str, Any]) -> Claim:
    return Claim(collection=stored["collection"], filter=stored["filter"], field=stored["field"])


def find(db: Any, goal_id: str) -> dict[str, Any] | None:
    """The accepted record of ``goal_id``, if it has one (being created, or failed)."""
    return db[COLLECTION].find_one({"_id": ObjectId(goal_id)})


def created(db: Any, goal_id: str) -> None:
    """The goal is stored and ``goal.created`` delivered: its record is done."""
    db[COLLECTION].delete_one({"_id": ObjectId(goal_id), "state": "creating"})


def fail(db: Any, record: dict[str, Any], reason: str) -> bool:
    """The goal can no longer be created: state ``failed`` with ``reason``, claims released, counted."""
    goal_id = str(record["_id"])
    marked = db[COLLECTION].update_one({"_id": record["_id"], "state": "creating"},
                                       {"$set": {"state": "failed", "reason": reason[:500], "failed_at": time.time()}})
    if not marked.modified_count:
        return False
    release_claims(db, [_claim(c) for c in record.get("claims", [])], goal_id)
    metrics.goal_failed((record.get("goal") or {}).get("_cls") or "unknown")
    log.error("goal %s (%s) could not be created: %s", goal_id, record.get("goal_type"), reason,
              extra={"goal_id": goal_id})
    return True


def open_in_session(db: Any, session_id: str) -> list[str]:
    """The ids of the goals of ``session_id`` being created (they count against its open-goal cap)."""
    return [str(r["_id"]) for r in db[COLLECTION].find({"session_id": session_id, "state": "creating"}, {"_id": 1})]


def requeue_accepted(db: Any, now: float | None = None) -> list[str]:
    """Publish again each ``creating`` record older than ``GOALHUB_RECONCILE_GRACE`` whose
    ``create-<id>`` job is not pending (lost with Redis, failed, or never enqueued because the
    API died); fail one published ``MAX_PUBLISHES`` times already. Returns the ids published."""
    now = time.time() if now is None else now
    due = now - config.settings().RECONCILE_GRACE
    records = list(db[COLLECTION].find({"state": "creating", "accepted_at": {"$lte": due}})
                   .sort("accepted_at", 1).limit(BATCH))
    if not records:
        return []
    ids = [str(r["_id"]) for r in records]
    jobs = Job.fetch_many([create_job_id(i) for i in ids], connection=get_redis())
    published = []
    for record, goal_id, job in zip(records, ids, jobs, strict=True):
        status = job.get_status(refresh=False) if job is not None else None
        if status in PENDING:
            continue
        if record.get("publishes", 0) >= MAX_PUBLISHES:
            error = _last_error(job) if status == JobStatus.FAILED else "its job was lost"
            fail(db, record, f"not created after {MAX_PUBLISHES} attempts: {error}")
            continue
        # Taken atomically: of two relays (or a relay and a request withdrawing it), one wins.
        taken = db[COLLECTION].update_one({"_id": record["_id"], "state": "creating",
                                           "publishes": record.get("publishes", 0)}, {"$inc": {"publishes": 1}})
        if not taken.modified_count:
            continue
        with tracing.span("relay create_goal", {"goalhub.goal_id": goal_id}, kind="producer",
                          parent=record["goal"].get(tracing.FIELD)):  # in the goal's trace
            enqueue(goal_id, goal=record["goal"], goal_type=record.get("goal_type"))
        published.append(goal_id)
        log.warning("outbox: goal %s was accepted %.0f s ago and its job is %s; enqueued again", goal_id,
                    now - record["accepted_at"], status.value if status else "gone", extra={"goal_id": goal_id})
    return published


def _last_error(job: Job | None) -> str:
    """The last line of the failed job's traceback (RQ's latest result), at most 200 characters."""
    result = job.latest_result() if job is not None else None
    if result is None or result.type != Result.Type.FAILED:
        return "its job failed"
    text = (result.exc_string or "").strip().splitlines()
    return text[-1][:200] if text else "its job failed"
