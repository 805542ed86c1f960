"""Binding one goal to another, once: the shared step of the seeds' ``bind_*`` receivers.

``bind_goal_once`` sets ``context.<field>`` of a goal to the new goal's id unless it is set
already. Delivering the event again finds it set to the same id and changes nothing; set to
another goal it raises ``BindingConflict``: a retry will not help, an operator must look.
"""

from __future__ import annotations

from bson import ObjectId

from goalhub.store import get_database


class BindingConflict(RuntimeError):
    """The document is bound to another goal already."""


def bind_goal_once(target_id: str, field: str, goal_id: str, what: str) -> None:
    """Goal ``target_id``'s ``context.<field>`` = ``goal_id``; ``what`` names the target in errors."""
    goals = get_database().goals
    path = f"context.{field}"
    result = goals.update_one({"_id": ObjectId(target_id), path: {"$exists": False}}, {"$set": {path: goal_id}})
    if result.matched_count:
        return
    target = goals.find_one({"_id": ObjectId(target_id)})
    if target is None:
        raise LookupError(f"{what} {target_id} not found")
    bound = target["context"].get(field)
    if bound != goal_id:
        raise BindingConflict(f"{what} {target_id} is bound to {bound}, not {goal_id}")
