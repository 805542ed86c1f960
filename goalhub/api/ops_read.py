"""What goalhub's own dashboard pages (``goalhub.api.ops``) show, read from rq-scheduler,
RQ's registries and the store: the scheduled lifecycle jobs, the retries waiting for their
backoff, and a goal's outcomes with the job that ran each."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from rq.job import Job

from goalhub.connection import get_redis
from goalhub.queues import all_queues, get_scheduler, job_id, job_parts
from goalhub.store import get_database
from goalhub.tasks import LIFECYCLE_KINDS


def when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def relative(seconds: float) -> str:
    return f"in {seconds:.0f} s" if seconds >= 0 else f"overdue {-seconds:.0f} s"


def scheduled_jobs() -> list[dict[str, Any]]:
    """rq-scheduler's jobs, soonest first: id, kind, goal id, goal class, due time."""
    now = time.time()
    connection = get_redis()
    scheduler = get_scheduler()
    entries: list[tuple[bytes, float]] = connection.zrange(  # type: ignore[assignment]
        scheduler.scheduled_jobs_key, 0, -1, withscores=True)
    jobs: list[dict[str, Any]] = []
    goal_ids: list[str] = []
    for raw_id, due in entries:
        jid = raw_id.decode()
        kind, goal_id = job_parts(jid)
        target = goal_id if len(goal_id) == 24 else None
        job: dict[str, Any] = {"id": jid, "kind": kind if kind in LIFECYCLE_KINDS else "other", "goal_id": target,
                               "due_epoch": due, "due": when(due), "seconds": due - now,
                               "relative": relative(due - now)}
        jobs.append(job)
        if target:
            goal_ids.append(target)
    classes: dict[str, Any] = {}
    if goal_ids:
        wanted = []
        for gid in goal_ids:
            try:
                wanted.append(ObjectId(gid))
            except InvalidId:
                continue
        classes = {str(g["_id"]): g.get("_cls") for g in get_database().goals.find({"_id": {"$in": wanted}}, {"_cls": 1})}
    for job in jobs:
        job["cls"] = classes.get(job["goal_id"] or "")
    return jobs


def waiting_retries() -> list[dict[str, Any]]:
    """Jobs in RQ's own scheduled registries (receivers' retries after their backoff)."""
    found = []
    for queue in all_queues():
        registry = queue.scheduled_job_registry
        for jid in registry.get_job_ids(cleanup=False):
            job = Job.fetch_many([jid], connection=queue.connection)[0]
            due = registry.get_scheduled_time(jid) if job is not None else None
            found.append({"id": jid, "queue": queue.name, "description": job.description if job else "(gone)",
                          "due": when(due.timestamp()) if due else "—"})
    return found


def goal_outcomes(goal_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A goal (with ``nbf_text``/``exp_text``) and its outcomes, each with the RQ job that ran it
    (``job_id``, ``job_url``) or why there is none (``job_note``); None if there is no such goal."""
    try:
        _id = ObjectId(goal_id)
    except (InvalidId, TypeError):
        return None
    goal = get_database().goals.find_one({"_id": _id})
    if goal is None:
        return None
    goal["nbf_text"], goal["exp_text"] = when(goal.get("nbf")), when(goal.get("exp"))
    outcomes = sorted(get_database().outcomes.find({"goal_id": goal_id}),
                      key=lambda o: (o.get("event", ""), o.get("plugin", ""), o.get("receiver", "")))
    # The job that ran each receiver (recorded with its outcome: the event's own job when it ran
    # inline); a receiver not run yet has its own job waiting (``receiver-...``).
    ran_in = [o.get("job_id") or job_id("receiver", o["_id"]) for o in outcomes]
    jobs = Job.fetch_many(ran_in, connection=get_redis())
    for outcome, job in zip(outcomes, jobs, strict=True):
        if outcome.get("status") == "skipped":
            outcome["job_note"] = "no job (skipped)"
        elif job is None:
            outcome["job_note"] = "job expired from Redis"
        else:
            outcome["job_id"] = job.id
            outcome["job_url"] = f"/rq/0/view/job/{job.id}"
    return goal, outcomes
