"""``track_goals``: every created goal, of every class, becomes an analytics event (seed 003).

The receiver runs ``goalhub_analytics.tasks.track`` (seed 003's "Trigger Task
analytics.tasks.track") itself, inline in the job that created the goal: when the sink answers
within the receiver's budget, a goal costs one RQ job, not two. When it does not (an error, a
non-2xx answer, the budget spent), the receiver fails as any receiver does and goalhub retries
it alone, in its own job, after its backoff; ``send_once`` keeps the event sent once.
"""

from __future__ import annotations

import time
from typing import Any

import goalhub
from goalhub_analytics.tasks import track


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
    """Run Task ``analytics.tasks.track`` for the new goal (a failure: retried in its own job)."""
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
    return track(event)
