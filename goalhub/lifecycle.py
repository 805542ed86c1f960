"""The core's own receiver: goal lifecycle scheduling, as an ordinary plugin.

Each goal type declares its class's lifecycle (``GoalType.activate_at_nbf``,
``GoalType.end_at_exp``). ``schedule_lifecycle_tasks`` schedules ``activate_goal`` at eta =
``nbf`` through rq-scheduler (at once when ``nbf`` has passed) for a class activated at
``nbf`` and, for a goal with ``exp`` whose class ends at ``exp``, ``end_goal`` at ``exp``.
It does not act on a class that declares neither; a class no installed goal type creates
gets both, as every class did before goal types declared their lifecycle.
"""

from __future__ import annotations

from collections.abc import Iterator, Set
from typing import Any

from goalhub import plugins
from goalhub.goaltypes import GoalType
from goalhub.hookspecs import receiver
from goalhub.tasks import schedule


def _declared(goal_class: str) -> GoalType | None:
    return plugins.goal_classes().get(goal_class)


class NotScheduled(Set[str]):
    """The goal classes whose goal type asks for no lifecycle task, read from the installed
    goal types each time (plugins come and go; tests register them inline)."""

    def _classes(self) -> frozenset[str]:
        return frozenset(c for c, goal_type in plugins.goal_classes().items() if not goal_type.scheduled)

    def __contains__(self, goal_class: object) -> bool:
        declared = _declared(goal_class) if isinstance(goal_class, str) else None
        return declared is not None and not declared.scheduled

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._classes()))

    def __len__(self) -> int:
        return len(self._classes())

    def __repr__(self) -> str:
        return f"NotScheduled({sorted(self._classes())})"

    __hash__ = object.__hash__  # one live object; receivers that hold it stay hashable


NOT_SCHEDULED = NotScheduled()


@receiver("goal.created")
def schedule_lifecycle_tasks(goal_id: str, _cls: str, nbf: float | None, exp: float | None) -> dict[str, Any]:
    declared = _declared(_cls)
    activate = declared is None or declared.activate_at_nbf
    end = declared is None or declared.end_at_exp
    jobs = []
    if activate:
        jobs.append(schedule("activate", goal_id, nbf))
    if end and exp is not None:
        jobs.append(schedule("end", goal_id, exp, reason="expired"))
    if not jobs:
        return {"scheduled": []}
    return {"scheduled": jobs, "nbf": nbf, "exp": exp}


# Read by the core's dispatch like any receiver's ``exclude``, but live: the classes come
# from the goal types installed when an event is delivered.
schedule_lifecycle_tasks.goalhub_excluded = NOT_SCHEDULED
