"""``track_goals``: every created goal, of every class, becomes an analytics event (seed 003).

The receiver only enqueues ``goalhub_analytics.tasks.track`` on goalhub's default queue
under a job id derived from the goal, so the event is built and sent by its own job.
"""

from __future__ import annotations

import time
from typing import Any

import goalhub
from goalhub_analytics.tasks import KIND, event_key, track


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
    jid = goalhub.job_id("track", goal_id)
    if goalhub.get_database().outbound.find_one({"_id": f"{KIND}:{event_key(event)}", "status": "sent"}, {"_id": 1}):
        return {"job_id": jid, "enqueued": False, "reason": "already tracked"}
    if goalhub.enqueue_once(track, event, job_id=jid, description=f"analytics track {_cls} {goal_id}") is None:
        return {"job_id": jid, "enqueued": False, "reason": "already queued"}
    return {"job_id": jid, "enqueued": True}
