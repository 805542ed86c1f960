"""Example goalhub plugin: a chat message for every new karaoke goal.

One receiver of ``goal.created`` that acts on ``KaraokeGoal`` only. Its effect is
idempotent: the message ``_id`` is derived from the goal, so delivering the event twice
leaves one message.
"""

from typing import Any

import goalhub


@goalhub.receiver("goal.created", "KaraokeGoal")
def welcome_karaoke_goal(goal_id: str, _cls: str, conditions: dict[str, Any], levels: list[dict]) -> dict:
    if _cls != "KaraokeGoal":
        return {"skipped": _cls}
    message = {
        "session_id": conditions["session_id"],
        "text": f"Karaoke goal opened: {levels[0]['target']} to go!",
    }
    goalhub.get_database().chat.update_one({"_id": f"welcome:{goal_id}"}, {"$set": message}, upsert=True)
    return message
