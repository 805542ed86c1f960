"""Plugin jobs kept in the store until they ran: ``goalhub.enqueue_once`` survives Redis.

A receiver that hands work to a job of its own (the analytics plugin's ``track``) returns
``ok`` once the job is enqueued; if Redis then loses the job, the work is lost with no
outcome to show it. So the public ``enqueue_once`` writes the job to the store first (the
``jobs`` collection: the job id, the function's importable name, its arguments and options),
then enqueues it with a success callback that deletes the record. The reconciler
(``requeue_jobs``) enqueues again, under the same id, each record older than
``GOALHUB_RECONCILE_GRACE`` whose job is gone; a record whose job finished (its callback did
not run: a horse killed right after) is deleted, and one whose job failed is marked ``failed``
(``goalhub retry`` and the failed registry take it from there). A job may therefore run again
after a loss: plugin jobs must be idempotent, as ``send_once`` makes outbound calls.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import Callback
from rq.job import Job, JobStatus

from goalhub import config, tracing
from goalhub.connection import get_redis
from goalhub.queues import PENDING, enqueue_once, get_queue
from goalhub.store import get_database

log = logging.getLogger(__name__)

COLLECTION = "jobs"
BATCH = 500
# The options kept with the record (what ``rq.Queue.enqueue`` takes that the store can hold).
KEPT_OPTIONS = ("description", "job_timeout", "result_ttl", "failure_ttl", "ttl")


def enqueue(db: Any, func: Any, *args: Any, job_id: str, **options: Any) -> Job | None:
    """``enqueue_once`` on the default queue, with the job kept in the store until it ran."""
    name = func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"
    existing = Job.fetch_many([job_id], connection=get_redis())[0]
    if existing is not None and existing.get_status(refresh=False) in PENDING:
        return None
    kept = {key: value for key, value in options.items() if key in KEPT_OPTIONS}
    db[COLLECTION].update_one({"_id": job_id}, {"$set": {"func": name, "args": list(args), "options": kept,
                                                          "state": "pending", "enqueued_at": time.time(),
                                                          **tracing.stamp()},
                                                 "$setOnInsert": {"publishes": 0}}, upsert=True)
    return _enqueue(name, args, job_id, {**options, "fresh": True})


def _enqueue(name: str, args: Any, job_id: str, options: dict[str, Any]) -> Job | None:
    return enqueue_once(get_queue(), name, *args, job_id=job_id,
                        on_success=Callback("goalhub.durable.ran"), **options)


def ran(job: Job, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    """RQ's success callback: the job ran; its record is done."""
    get_database()[COLLECTION].delete_one({"_id": job.id})


def requeue_jobs(db: Any, now: float | None = None) -> list[str]:
    """Enqueue again each kept job whose RQ job is gone; returns their ids."""
    due = (time.time() if now is None else now) - config.settings().RECONCILE_GRACE
    records = list(db[COLLECTION].find({"state": "pending", "enqueued_at": {"$lte": due}}).limit(BATCH))
    if not records:
        return []
    jobs = Job.fetch_many([r["_id"] for r in records], connection=get_redis())
    requeued = []
    for record, job in zip(records, jobs, strict=True):
        status = job.get_status(refresh=False) if job is not None else None
        if status in PENDING:
            continue
        if status == JobStatus.FINISHED:
            db[COLLECTION].delete_one({"_id": record["_id"]})
            continue
        if status == JobStatus.FAILED:
            db[COLLECTION].update_one({"_id": record["_id"]}, {"$set": {"state": "failed"}})
            continue
        taken = db[COLLECTION].update_one({"_id": record["_id"], "publishes": record.get("publishes", 0)},
                                          {"$inc": {"publishes": 1}, "$set": {"enqueued_at": time.time()}})
        if not taken.modified_count:
            continue
        with tracing.span(f"reconcile {record['func'].rpartition('.')[2]}", kind="producer",
                          parent=record.get(tracing.FIELD)):  # the job joins the trace that enqueued it
            _enqueue(record["func"], record["args"], record["_id"], dict(record.get("options") or {}))
        requeued.append(record["_id"])
        log.warning("reconciler: job %s (%s) was lost; enqueued again", record["_id"], record["func"])
    return requeued
