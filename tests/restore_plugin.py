"""A goalhub plugin for the backup and restore test: one receiver of ``goal.created`` that
marks the goal in the store (``GOALHUB_PLUGINS=restore_plugin``, this directory importable)."""

import goalhub


@goalhub.receiver("goal.created")
def mark(goal_id, _cls):
    goalhub.get_database().marks.update_one({"_id": goal_id}, {"$inc": {"runs": 1}}, upsert=True)
    return {"marked": goal_id}
