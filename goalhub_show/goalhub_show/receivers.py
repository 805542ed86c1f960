"""The show binding receivers of ``goal.created`` (seed 003).

Delivering an event twice leaves the same documents: values are ``$set``, and the one
``$push`` (a session's pair) is filtered on the pair not being there yet. ``goal.added`` may
be sent twice; the core delivers each (event, goal) to its receivers once.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

import goalhub


@goalhub.receiver("goal.created", "ShowGoal")
def bind_show_goal_to_funding_goal(goal_id: str, _cls: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """Funding goal ``context.show_goal_id`` = the new show goal."""
    if _cls != "ShowGoal":
        return None
    funding_id = context["funding_goal_id"]
    # Only an unbound funding goal is bound; the API claimed it for this goal when it accepted the request.
    goalhub.bind_goal_once(funding_id, "show_goal_id", goal_id, "show funding goal")
    return {"funding_goal_id": funding_id, "show_goal_id": goal_id}


@goalhub.receiver("goal.created", "ShowGoal", "ShowFundingGoal")
def bind_show_goals_to_session(
    goal_id: str, _cls: str, conditions: dict[str, Any], context: dict[str, Any]
) -> dict[str, Any] | None:
    """A ``ShowFundingGoal`` adds the session pair ``{funding_goal, show_goal: None}``; a
    ``ShowGoal`` sets ``show_goal`` in the pair of its funding goal. Then ``goal.added``."""
    if _cls not in ("ShowGoal", "ShowFundingGoal"):
        return None
    sessions = goalhub.get_database().sessions
    session_id = conditions["session_id"]
    if _cls == "ShowFundingGoal":
        _add_pair(sessions, session_id, goal_id, None)
    else:
        _set_show_goal(sessions, session_id, context["funding_goal_id"], goal_id)
    session = sessions.find_one({"_id": ObjectId(session_id)}, {"user": 1})
    goalhub.send_event(
        "goal.added",
        goal_id=goal_id,
        _cls=_cls,
        conditions=conditions,
        context=context,
        session_id=str(session["_id"]),
        streamer_id=session["user"],
    )
    return {"session_id": session_id, "streamer_id": session["user"], "goal_added": True}


def _add_pair(sessions: Any, session_id: str, funding_id: str, show_id: str | None) -> bool:
    """Push the pair unless the session has one for ``funding_id``; False if it had."""
    result = sessions.update_one(
        {"_id": ObjectId(session_id), "show_goal_pairs.funding_goal": {"$ne": funding_id}},
        {"$push": {"show_goal_pairs": {"funding_goal": funding_id, "show_goal": show_id}}},
    )
    if result.matched_count == 0 and sessions.count_documents({"_id": ObjectId(session_id)}) == 0:
        raise LookupError(f"session {session_id} not found")
    return result.matched_count == 1


def _set_show_goal(sessions: Any, session_id: str, funding_id: str, show_id: str) -> None:
    # Seed 003's positional update, only on a pair that has no other show goal yet.
    pair = {"funding_goal": funding_id, "show_goal": {"$in": [None, show_id]}}
    for _ in range(2):
        result = sessions.update_one(
            {"_id": ObjectId(session_id), "show_goal_pairs": {"$elemMatch": pair}},
            {"$set": {"show_goal_pairs.$.show_goal": show_id}},
        )
        if result.matched_count == 1:
            return
        # No pair yet (the funding goal's own binding has not run): add it complete. If it
        # appeared meanwhile, the loop sets it through the positional update after all.
        if _add_pair(sessions, session_id, funding_id, show_id):
            return
        session = sessions.find_one({"_id": ObjectId(session_id)}, {"show_goal_pairs": 1})
        bound = [p.get("show_goal") for p in session.get("show_goal_pairs", []) if p.get("funding_goal") == funding_id]
        if bound and bound[0] not in (None, show_id):
            raise goalhub.BindingConflict(f"session {session_id} pairs funding goal {funding_id} with {bound[0]}, not {show_id}")
    raise RuntimeError(f"could not bind show goal {show_id} in session {session_id}")
