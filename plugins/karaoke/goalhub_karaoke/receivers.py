"""The session binding receivers of ``goal.created`` for ``KaraokeGoal`` and ``TriggerPrivateGoal``.

A session holds one current goal of each kind: a newer goal replaces an older one. The
update only moves forward (ObjectId strings sort by creation time), so delivering an old
goal's event again, even after a newer goal was bound, leaves the same documents.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

import goalhub


def _bind_current(session_id: str, field: str, goal_id: str) -> dict[str, Any]:
    sessions = goalhub.get_database().sessions
    result = sessions.update_one(
        {"_id": ObjectId(session_id), "$or": [{field: None}, {field: {"$lte": goal_id}}]},
        {"$set": {field: goal_id}},
    )
    if result.matched_count == 1:
        return {"session_id": session_id, field: goal_id}
    session = sessions.find_one({"_id": ObjectId(session_id)}, {field: 1})
    if session is None:
        raise LookupError(f"session {session_id} not found")
    return {"session_id": session_id, field: session[field], "superseded": True}


@goalhub.receiver("goal.created", "KaraokeGoal")
def bind_karaoke_goal_to_session(goal_id: str, _cls: str, conditions: dict[str, Any]) -> dict[str, Any] | None:
    """Session ``karaoke_goal`` = the new karaoke goal."""
    if _cls != "KaraokeGoal":
        return None
    return _bind_current(conditions["session_id"], "karaoke_goal", goal_id)


@goalhub.receiver("goal.created", "TriggerPrivateGoal")
def bind_trigger_private_goal_to_session(goal_id: str, _cls: str, conditions: dict[str, Any]) -> dict[str, Any] | None:
    """Session ``trigger_private_goal`` = the new private-show countdown."""
    if _cls != "TriggerPrivateGoal":
        return None
    return _bind_current(conditions["session_id"], "trigger_private_goal", goal_id)
