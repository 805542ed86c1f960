"""``track_goals``: every created goal, of every class, becomes an analytics event (seed 003).

The receiver only enqueues ``goalhub_analytics.tasks.track`` on goalhub's default queue
under a job id derived from the goal, so the event is built and sent by its own job.
"""

from __future__ import annotations

import time
from typing import Any

from rq import Retry
from rq.job import Job, JobStatus

import goalhub
from goalhub import config
from goalhub.queues import get_queue, job_id
from goalhub.store import get_database
from goalhub_analytics.tasks import KIND, event_key, track

# Job states in which the track job will still run: no need to enqueue it again.
_PENDING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


@goalhub.receiver("goal.created")
def track_goals(
    goal_id: str,
    active: bool,
    _cls: str,
    conditions: dict[str, Any],
    context: dict[str, Any],
    levels: list[dict[str, Any]],
    nbf: float | None,
    exp: float | None,
) -> dict[str, Any]:
    """Trigger Task ``analytics.tasks.track`` for the new goal."""
    event = {
        "event": "goal.created",
        "goal_id": goal_id,
        "_cls": _cls,
        "active": active,
        "user_id": None,  # the task fills it in from the stored goal's metadata
        "session_id": (conditions or {}).get("session_id"),
        "context_type": (context or {}).get("type"),
        "levels": levels,
        "nbf": nbf,
        "exp": exp,
        "at": time.time(),
    }
    jid = job_id("track", goal_id)
    if get_database().outbound.find_one({"_id": f"{KIND}:{event_key(event)}", "status": "sent"}, {"_id": 1}):
        return {"job_id": jid, "enqueued": False, "reason": "already tracked"}
    queue = get_queue()
    existing = Job.fetch_many([jid], connection=queue.connection)[0]
    if existing is not None and existing.get_status(refresh=False) in _PENDING:
        return {"job_id": jid, "enqueued": False, "reason": "already queued"}
    retries = config.receiver_retries()
    queue.enqueue(
        track,
        event,
        job_id=jid,
        retry=Retry(max=retries, interval=config.receiver_backoff()) if retries > 0 else None,
        description=f"analytics track {_cls} {goal_id}",
        failure_ttl=7 * 24 * 3600,
    )
    return {"job_id": jid, "enqueued": True}
