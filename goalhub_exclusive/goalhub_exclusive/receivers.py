"""The exclusive binding receivers of ``goal.created`` (seed 000).

Both only ``$set`` a value derived from the event, so delivering an event twice leaves
the same documents.
"""

from __future__ import annotations

import re
from typing import Any

from bson import ObjectId

import goalhub

# ``exclusive_to`` is a key of the session's ``exclusive_goal_pairs`` map and so part of an
# update path: no dots, no ``$``. The API allows nothing else; this guards direct fires.
EXCLUSIVE_TO = re.compile(r"[A-Za-z0-9_-]{1,64}")

# The role each class plays in its session's pair.
ROLES = {"TriggerExclusiveGoal": "trigger_exclusive_goal", "ExclusiveGoal": "exclusive_goal"}


@goalhub.receiver("goal.created", "ExclusiveGoal")
def bind_exclusive_goal_to_trigger_exclusive_goal(goal_id: str, _cls: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """Trigger goal ``context.exclusive_goal_id`` = the new exclusive goal."""
    if _cls != "ExclusiveGoal":
        return None
    trigger_id = context["trigger_exclusive_goal_id"]
    # Only an unbound trigger is bound; the API claimed it for this goal when it accepted the request.
    goalhub.bind_goal_once(trigger_id, "exclusive_goal_id", goal_id, "trigger exclusive goal")
    return {"trigger_exclusive_goal_id": trigger_id, "exclusive_goal_id": goal_id}


@goalhub.receiver("goal.created", "TriggerExclusiveGoal", "ExclusiveGoal")
def bind_exclusive_goals_to_session(goal_id: str, _cls: str, conditions: dict[str, Any]) -> dict[str, Any] | None:
    """Session ``exclusive_goal_pairs.<exclusive_to>.<role>`` = the new goal."""
    role = ROLES.get(_cls)
    if role is None:
        return None
    session_id = conditions["session_id"]
    exclusive_to = conditions["exclusive_to"]
    if not isinstance(exclusive_to, str) or not EXCLUSIVE_TO.fullmatch(exclusive_to):
        raise ValueError(f"exclusive_to {exclusive_to!r} cannot be a key of exclusive_goal_pairs")
    path = f"exclusive_goal_pairs.{exclusive_to}.{role}"
    result = goalhub.get_database().sessions.update_one({"_id": ObjectId(session_id)}, {"$set": {path: goal_id}})
    if result.matched_count == 0:
        raise LookupError(f"session {session_id} not found")
    return {"session_id": session_id, "set": path}
