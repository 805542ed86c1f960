"""The platform's world for the bundled plugins' receiver tests: its goal classes, a goal
document of each, and a live session with documents a wrong receiver would touch."""

from __future__ import annotations

import time
from typing import Any

from bson import ObjectId

from goalhub import hookimpl

GOAL_CLASSES = ("ExclusiveGoal", "TriggerExclusiveGoal", "ShowGoal", "ShowFundingGoal", "KaraokeGoal",
                "TriggerPrivateGoal")
# The countdowns: they end at ``exp``.
COUNTDOWN_CLASSES = ("TriggerExclusiveGoal", "ShowFundingGoal", "TriggerPrivateGoal")


def goal_document(cls: str, session_id: str, user_id: str, *, conditions: dict[str, Any] | None = None,
                  context: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A goal of ``cls`` as ``create_goal`` gets it (its id allocated), active, one level,
    ``exp`` an hour ahead for a countdown; ``conditions``/``context`` add to the defaults."""
    return {
        "_id": str(ObjectId()),
        "_cls": cls,
        "active": True,
        "conditions": {"session_id": session_id, **(conditions or {})},
        "levels": [{"target": 300}],
        "nbf": None,
        "exp": time.time() + 3600 if cls in COUNTDOWN_CLASSES else None,
        "context": {"type": cls, "session_id": session_id, **(context or {})},
        "metadata": {"user_id": user_id},
        **fields,
    }


def live_session(db: Any) -> dict[str, str]:
    """A live session of a new streamer with an ended show funding countdown (paired, unbound)
    and an ended exclusive trigger in it: documents a wrong receiver would touch. Returns the
    ids: ``streamer``, ``session_id``, ``funding_id``, ``trigger_id``."""
    now = time.time()
    streamer = str(ObjectId())
    session_id, funding_id, trigger_id = ObjectId(), ObjectId(), ObjectId()
    sid = str(session_id)
    db.sessions.insert_one(
        {
            "_id": session_id,
            "user": streamer,
            "active": True,
            "sources": [],
            "exclusive_goal_pairs": {"viewer-1": {"trigger_exclusive_goal": str(trigger_id)}},
            "show_goal_pairs": [{"funding_goal": str(funding_id), "show_goal": None}],
        }
    )
    base = {"active": False, "levels": [{"target": 100}], "nbf": now - 120, "exp": now - 1, "metadata": {"user_id": streamer}}
    db.goals.insert_many(
        [
            {**base, "_id": funding_id, "_cls": "ShowFundingGoal", "conditions": {"session_id": sid}, "context": {"type": "show_funding", "session_id": sid}},
            {
                **base,
                "_id": trigger_id,
                "_cls": "TriggerExclusiveGoal",
                "conditions": {"session_id": sid, "exclusive_to": "viewer-1"},
                "context": {"type": "trigger_exclusive", "session_id": sid, "exclusive_to": "viewer-1"},
            },
        ]
    )
    return {"streamer": streamer, "session_id": sid, "funding_id": str(funding_id), "trigger_id": str(trigger_id)}


class PlatformGoalTypes:
    """An inline plugin with the bundled plugins' goal types (their lifecycle, session fields
    and samples) and none of their receivers: a core test that needs the platform's classes
    registers it (``inline_plugin(PlatformGoalTypes(), "platform-goal-types")``)."""

    @hookimpl
    def goal_types(self) -> list[Any]:
        from goalhub_exclusive.goaltypes import goal_types as exclusive
        from goalhub_karaoke.goaltypes import goal_types as karaoke
        from goalhub_show.goaltypes import goal_types as show

        return [*exclusive(), *show(), *karaoke()]
