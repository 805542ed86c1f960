"""The core's own receiver: goal lifecycle scheduling, as an ordinary plugin.

Seed 000/003: ``schedule_lifecycle_tasks`` acts on every goal class but ``KaraokeGoal``
and ``ShowGoal``: ``activate_goal`` at eta = ``nbf`` through rq-scheduler (at once when
``nbf`` has passed) and, for a goal with ``exp``, ``end_goal`` at ``exp``.
"""

from __future__ import annotations

from typing import Any

from goalhub.hookspecs import receiver
from goalhub.tasks import schedule

NOT_SCHEDULED = ("KaraokeGoal", "ShowGoal")


@receiver("goal.created", exclude=NOT_SCHEDULED)
def schedule_lifecycle_tasks(goal_id: str, _cls: str, nbf: float | None, exp: float | None) -> dict[str, Any]:
    if _cls in NOT_SCHEDULED:
        return {"scheduled": []}
    jobs = [schedule("activate", goal_id, nbf)]
    if exp is not None:
        jobs.append(schedule("end", goal_id, exp, reason="expired"))
    return {"scheduled": jobs, "nbf": nbf, "exp": exp}
