"""A slow receiver stops costing its siblings (``goalhub.slowness``): after one overrun of its
budget it runs as its own job for the following events, so its siblings run first, inline in
the event's job; ``goalhub hooks``, the live view and ``/admin/receivers`` show it, and
``goalhub resume`` ends it. Real RQ jobs on the embedded Redis; ordering, not timing."""

from __future__ import annotations

import json
import time

from bson import ObjectId
from click.testing import CliRunner
from rq import SimpleWorker

import goalhub
from goalhub import liveview, slowness, tasks
from goalhub.cli import main
from goalhub.connection import get_redis
from goalhub.queues import all_queues, job_id


class Siblings:
    @goalhub.receiver("goal.created")
    def tally(self, goal_id):
        return "ok"

    @goalhub.receiver("goal.created")
    def notify(self, goal_id):
        return "ok"


class Hanging:
    fixed = False

    # Registered last, so pluggy calls it first: inline, it holds its siblings back.
    @goalhub.receiver("goal.created", budget=0.3, retries=0)
    def snapshot(self, goal_id):
        while not self.fixed:
            time.sleep(0.05)
        return "fixed"


def create_and_work(db) -> dict[str, dict]:
    goal = {"_id": str(ObjectId()), "_cls": "KaraokeGoal", "active": True,
            "conditions": {"session_id": str(ObjectId())}, "levels": [{"target": 10}], "nbf": None, "exp": None,
            "context": {"type": "karaoke"}, "metadata": {"user_id": str(ObjectId())}}
    tasks.enqueue_create_goal(goal)
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="ERROR")
    return {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal["_id"]})}


def test_after_one_overrun_the_siblings_of_the_next_events_start_before_the_slow_receiver(db, inline_plugin):
    inline_plugin(Siblings(), "siblings")
    hanging = Hanging()
    inline_plugin(hanging, "snap")
    first = create_and_work(db)
    # The first overrun: inline, the siblings waited for it (what goalhub learns from).
    assert first["snapshot"]["timed_out"] is True
    assert first["snapshot"]["finished_at"] <= min(first["tally"]["started_at"], first["notify"]["started_at"])
    assert slowness.is_isolated("snap.snapshot")

    for _ in range(2):  # the following events
        found = create_and_work(db)
        create_job = job_id("create", found["tally"]["goal_id"])
        slow = found["snapshot"]
        assert slow["job_id"] == job_id("receiver", slow["_id"])  # its own job
        for name in ("tally", "notify"):
            assert found[name]["status"] == "ok" and found[name]["job_id"] == create_job  # inline, as before
            assert found[name]["finished_at"] <= slow["started_at"]  # not behind the slow one

    hooks = CliRunner().invoke(main, ["hooks"])
    assert "SLOW: overran its budget" in hooks.output and "(`goalhub resume` ends it)" in hooks.output
    assert any("snap.snapshot runs as its own job" in line for line in liveview.summary(liveview.health()))
    hanging.fixed = True  # the operator fixed its downstream, then resumes it
    resumed = CliRunner().invoke(main, ["resume", "snap.snapshot", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["unisolated"] == ["snap.snapshot"]
    assert not slowness.is_isolated("snap.snapshot")
    assert create_and_work(db)["snapshot"]["job_id"].startswith("create")  # inline again


def test_isolation_is_off_with_a_period_of_zero(db, inline_plugin, monkeypatch):
    monkeypatch.setenv("GOALHUB_SLOW_ISOLATE_FOR", "0")
    inline_plugin(Siblings(), "siblings")
    inline_plugin(Hanging(), "snap")
    create_and_work(db)
    assert not slowness.is_isolated("snap.snapshot")
    found = create_and_work(db)
    assert found["snapshot"]["job_id"] == job_id("create", found["tally"]["goal_id"])  # inline again
