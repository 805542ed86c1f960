"""Work that has been ``running`` or ``creating`` too long (``goalhub outcomes --stale``), each
with a hint of why and what to do (docs/RUNBOOK.md).

- An outcome ``running``, ``queued`` or ``retrying`` for longer than the threshold: the hint
  says whether a job that would finish it is still pending (queued, started: by a live worker
  or a dead one) or none is (then ``goalhub restore --reconcile-only`` delivers it again),
  whether its receiver is not installed here (renamed or removed: ``goalhub retarget``/``drop``),
  and whether the ledger has its receiver finished (an inline run whose ``ok`` waits for the
  event's other inline receivers, or whose process died before writing it: never run again).
- A goal ``creating`` (its ``create_goal`` job is in Redis, the goal is not in the store) for
  longer than the threshold: the job's status says why (queued behind others, failed, lost
  with a restore of the store).
"""

from __future__ import annotations

import time
from typing import Any

from bson import ObjectId
from rq import Worker
from rq.job import Job, JobStatus

from goalhub import ledger, liveness
from goalhub.connection import get_redis
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.queues import PENDING, job_id
from goalhub.receivers import find_receiver
from goalhub.store import get_database
from goalhub.tasks import create_jobs

UNSETTLED = ("running", "queued", "retrying")


def _job_hint(job: Job | None) -> str:
    connection = get_redis()
    if job is None:
        return "no job will finish it: `goalhub restore --reconcile-only` delivers it again"
    status = job.get_status(refresh=False)
    if status == JobStatus.STARTED:
        name = job.worker_name
        worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=connection) if name else None
        if liveness.worker_dead(worker):
            return (f"job {job.id} started by worker {name or '?'}, which is dead: a worker's start or maintenance "
                    "recovers it (GOALHUB_MAINTENANCE_INTERVAL)")
        return f"job {job.id} is running on live worker {name}"
    if status in PENDING:
        return f"job {job.id} is {status.value}: waiting for a worker (queue depth, `goalhub_workers`)"
    if status == JobStatus.FAILED:
        return f"job {job.id} failed: `goalhub outcomes --failed`, then `goalhub retry`"
    return f"job {job.id} is {status.value} yet the work is not recorded: `goalhub restore --reconcile-only`"


def _since(outcome: dict[str, Any]) -> float:
    """When an outcome's current state began: its run's start, else its queueing."""
    return outcome.get("started_at") or outcome.get("queued_at") or 0


def stale(older_than: float, now: float | None = None) -> list[dict[str, Any]]:
    """Outcomes unsettled and goals creating for longer than ``older_than`` seconds, oldest first."""
    now = time.time() if now is None else now
    db = get_database()
    connection = get_redis()
    found: list[dict[str, Any]] = []
    old = [o for o in db.outcomes.find({"status": {"$in": list(UNSETTLED)}}) if now - _since(o) >= older_than]
    # The ledgers of the goals with a running one, in one read (a goal's outcomes share one).
    done = ledger.finished_many(db, sorted({str(o["goal_id"]) for o in old if o["status"] == "running"}))
    for outcome in old:
        candidates = [job_id("receiver", outcome["_id"])]
        if outcome.get("event") == "goal.created":
            candidates.append(job_id("create", str(outcome["goal_id"])))
        jobs = [job for job in Job.fetch_many(candidates, connection=connection) if job is not None]
        pending = next((job for job in jobs if job.get_status(refresh=False) in PENDING), None)
        hint = _job_hint(pending or (jobs[0] if jobs else None))
        receiver_id = f"{outcome.get('plugin')}.{outcome.get('receiver')}"
        if (outcome["status"] == "running" and ledger.entry(outcome.get("event", ""), receiver_id)
                in done.get(str(outcome["goal_id"]), ())):
            hint = ("its receiver finished (the ledger has it), never to run again: its ok outcome is written "
                    "with its event's other inline ones once they have run, or by the event's next delivery "
                    f"if its process died; {hint}")
        if outcome.get("event") in EVENT_HOOKS and find_receiver(outcome["event"], receiver_id) is None:
            hint = (f"receiver {receiver_id} is not installed here: renamed or removed by an upgrade? "
                    f"`goalhub retarget {receiver_id} NEW_ID` or `goalhub drop {receiver_id}`; {hint}")
        found.append({"kind": "outcome", "id": outcome["_id"], "goal_id": str(outcome["goal_id"]),
                      "status": outcome["status"], "age": round(now - _since(outcome), 1), "hint": hint})
    for job in create_jobs():
        if job.enqueued_at is None:
            continue
        age = now - job.enqueued_at.timestamp()
        goal_id = job.id[len(job_id("create", "")):]
        if age < older_than or (ObjectId.is_valid(goal_id) and db.goals.count_documents({"_id": ObjectId(goal_id)},
                                                                                           limit=1)):
            continue
        found.append({"kind": "creating", "id": job.id, "goal_id": goal_id, "status": "creating",
                      "age": round(age, 1), "hint": _job_hint(job)})
    return sorted(found, key=lambda item: -item["age"])
