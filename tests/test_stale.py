"""``goalhub outcomes --stale`` (issue 24 item 8): what has been running or creating too long,
and a hint of why, through the real CLI on the real Redis and store."""

from __future__ import annotations

import json
import time

from bson import ObjectId
from click.testing import CliRunner

from goalhub import tasks
from goalhub.cli import main
from goalhub.store import get_database


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_stale_lists_running_outcomes_and_creating_goals_with_hints():
    db = get_database()
    lost, fresh = str(ObjectId()), str(ObjectId())
    db.outcomes.insert_one({"_id": f"goal.created:{lost}|demo.slow", "event": "goal.created", "goal_id": lost,
                            "receiver": "slow", "plugin": "demo", "status": "running", "attempts": 1,
                            "queued_at": time.time() - 900, "started_at": time.time() - 900})
    db.outcomes.insert_one({"_id": f"goal.created:{fresh}|demo.slow", "event": "goal.created", "goal_id": fresh,
                            "receiver": "slow", "plugin": "demo", "status": "running", "attempts": 1,
                            "queued_at": time.time(), "started_at": time.time()})
    creating = tasks.enqueue_create_goal({"_id": str(ObjectId()), "_cls": "DemoGoal", "active": True,
                                          "conditions": {}, "levels": [], "nbf": None, "exp": None, "context": {}})

    result = run("outcomes", "--stale", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert [item["goal_id"] for item in found] == [lost]  # 900 s old; the others are younger than 300 s
    assert "no job will finish it" in found[0]["hint"]

    found = json.loads(run("outcomes", "--stale", "--older-than", "0", "--json").output)
    kinds = {item["goal_id"]: item for item in found}
    assert set(kinds) == {lost, fresh, creating}
    assert kinds[creating]["kind"] == "creating" and "queued: waiting for a worker" in kinds[creating]["hint"]

    from goalhub import ledger
    ledger.finish(db, lost, "goal.created", "demo.slow")  # it ran: its ok outcome was not written yet
    [found] = json.loads(run("outcomes", "--stale", "--json").output)
    assert "its receiver finished (the ledger has it), never to run again" in found["hint"]
    assert "no job will finish it" in found["hint"]

    table = run("outcomes", "--stale").output
    assert lost in table and "no job will finish it" in table
    assert "Nothing running or creating" in run("outcomes", "--stale", "--older-than", "100000").output
