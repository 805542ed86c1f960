"""`goalhub fire` as a plugin author meets it: realistic samples from the goal types (the
bundled receivers succeed on them), `--plugin`, test fires marked and purged, pure `--json`,
the embedded Redis stopped when `fire` started it; and signals that dispatch whatever was
imported first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from bson import ObjectId
from click.testing import CliRunner
from world import GOAL_CLASSES, BundledGoalTypes

from goalhub import connection
from goalhub.cli import main
from goalhub.queues import all_queues

BUNDLED = ("exclusive", "show", "karaoke", "snapshot", "analytics", "livestream")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


@pytest.mark.parametrize("cls", GOAL_CLASSES)
def test_every_bundled_receiver_succeeds_on_its_goal_types_sample(cls, use_plugins, db):
    use_plugins(*BUNDLED)
    result = run("fire", "goal.created", "--cls", cls, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    statuses = {f"{o['plugin']}.{o['receiver']}": o["status"] for o in report["outcomes"]}
    assert "failed" not in statuses.values() and "retrying" not in statuses.values(), report["outcomes"]
    acting = {rid for rid, status in statuses.items() if status == "ok" and not rid.startswith("goalhub.")}
    assert acting, statuses  # some bundled receiver acted on it, and succeeded
    assert all(o["test_fire"] is True for o in db.outcomes.find())


def test_a_show_goal_fire_binds_to_the_funding_goal_its_sample_made(use_plugins, db):
    use_plugins(*BUNDLED)
    result = run("fire", "goal.created", "--cls", "ShowGoal", "--json")
    assert result.exit_code == 0, result.output
    arguments = json.loads(result.stdout)["arguments"]
    funding = db.goals.find_one({"_id": ObjectId(arguments["context"]["funding_goal_id"])})
    assert funding["_cls"] == "ShowFundingGoal" and funding["test_fire"] is True
    assert funding["context"]["show_goal_id"] == arguments["goal_id"]
    session = db.sessions.find_one({"_id": ObjectId(arguments["conditions"]["session_id"])})
    assert session["test_fire"] is True
    assert session["show_goal_pairs"] == [{"funding_goal": str(funding["_id"]), "show_goal": arguments["goal_id"]}]
    # goal.added, sent by the show receiver, reached the livestream receivers: marked too.
    added = list(db.outcomes.find({"event": "goal.added", "goal_id": arguments["goal_id"]}))
    assert added and all(o["status"] == "ok" and o["test_fire"] for o in added)


def test_fire_plugin_delivers_to_the_chosen_plugins_alone(use_plugins, db):
    use_plugins(*BUNDLED)
    result = run("fire", "goal.created", "--cls", "ExclusiveGoal", "--plugin", "snapshot", "--json")
    assert result.exit_code == 0, result.output
    goal_id = json.loads(result.stdout)["arguments"]["goal_id"]
    assert {o["plugin"] for o in db.outcomes.find({"goal_id": goal_id})} == {"snapshot"}
    dry = json.loads(run("fire", "goal.created", "--cls", "ExclusiveGoal", "--plugin", "exclusive",
                         "--dry-run", "--json").stdout)
    assert {r["plugin"] for r in dry["receivers"]} == {"exclusive"}
    unknown = run("fire", "goal.created", "--cls", "ExclusiveGoal", "--plugin", "nope")
    assert unknown.exit_code == 1 and "no plugin or receiver 'nope'" in unknown.stderr


def test_test_fires_are_marked_and_purged_with_their_failed_jobs(inline_plugin, monkeypatch, db):
    import goalhub

    class Failing:
        @goalhub.receiver("goal.created", "KaraokeGoal")
        def always_fails(self, goal_id):
            raise RuntimeError("nope")

    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    inline_plugin(BundledGoalTypes(), "bundled-goal-types")
    inline_plugin(Failing(), "failing")
    real_session = db.sessions.insert_one({"user": "u", "active": True}).inserted_id
    assert run("fire", "goal.created", "--cls", "KaraokeGoal").exit_code == 1
    listed = run("outcomes", "--failed")
    assert "always_fails" in listed.stdout and " test " in listed.stdout
    assert json.loads(run("outcomes", "--failed", "--no-test", "--json").stdout) == []
    failed_jobs = sum(len(q.failed_job_registry.get_job_ids()) for q in all_queues())
    assert failed_jobs == 1

    purged = json.loads(run("outcomes", "--purge-test", "--json").stdout)
    assert purged["outcomes"] == 2 and purged["goals"] == purged["sessions"] == 1
    assert db.outcomes.count_documents({}) == db.goals.count_documents({}) == 0
    assert [s["_id"] for s in db.sessions.find()] == [real_session]  # only test documents go
    assert sum(len(q.failed_job_registry.get_job_ids()) for q in all_queues()) == 0


def test_fire_json_is_pure_and_fire_stops_the_embedded_redis_it_started(tmp_path, inline_plugin):
    home = tmp_path / "own-home"
    env = {k: v for k, v in os.environ.items() if k != "GOALHUB_REDIS_URL"}
    env.update(GOALHUB_HOME=str(home), GOALHUB_LOAD_PLUGINS="")
    result = subprocess.run([sys.executable, "-m", "goalhub", "fire", "goal.created", "--cls", "ConfettiGoal",
                             "--json"], env=env, capture_output=True, text=True, timeout=120)
    # No goal type creates ConfettiGoal here: one clear line, and no server left behind.
    assert result.returncode == 1 and "unknown goal class 'ConfettiGoal'" in result.stderr
    assert not connection.embedded_redis_running(home)

    code = textwrap.dedent("""
        import goalhub, sys
        from goalhub.cli import main

        class Confetti:
            @goalhub.hookimpl
            def goal_types(self):
                return [goalhub.GoalType("confetti", "ConfettiGoal", prepare=None)]

            @goalhub.receiver("goal.created", "ConfettiGoal")
            def celebrate(self, goal_id):
                return goal_id

        from goalhub import plugins
        plugins.register(Confetti(), "confetti")
        main(["fire", "goal.created", "--cls", "ConfettiGoal", "--json"])
        """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert {o["receiver"]: o["status"] for o in report["outcomes"]}["celebrate"] == "ok"
    assert not connection.embedded_redis_running(home)


def test_a_signal_dispatches_without_goalhub_dispatch_imported_first(tmp_path):
    code = textwrap.dedent("""
        import sys
        from goalhub import signals  # alone: importing the signals connects the core's delivery
        assert signals.leaderboards.has_receivers_for("goal.created") and "goalhub.dispatch" in sys.modules
        signals.leaderboards.send("goal.created", goal_id="6b0ea1adde0541e4c8f5e023", active=True,
                                  _cls="ConfettiGoal", conditions={}, context={}, levels=[], nbf=None, exp=None)
        from goalhub.store import get_database
        outcome = get_database().outcomes.find_one({"receiver": "schedule_lifecycle_tasks"})
        print(outcome["status"])
        """)
    env = {**os.environ, "GOALHUB_HOME": str(tmp_path / "home"), "GOALHUB_LOAD_PLUGINS": ""}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["queued"]


def test_the_fire_fixture_runs_real_dispatch_and_returns_the_outcomes(inline_plugin, fire):
    import goalhub

    seen = []

    class Confetti:
        @goalhub.receiver("goal.created", "ConfettiGoal")
        def celebrate(self, goal_id, context):
            seen.append(context)
            return {"colour": context["colour"]}

    inline_plugin(Confetti(), "confetti")
    outcomes = fire("goal.created", "ConfettiGoal", context={"colour": "gold"})
    assert outcomes["confetti.celebrate"]["status"] == "ok"
    assert outcomes["confetti.celebrate"]["result"] == {"colour": "gold"}
    assert outcomes["goalhub.lifecycle.schedule_lifecycle_tasks"]["status"] == "ok"  # undeclared: scheduled
    assert seen[0]["colour"] == "gold" and "session_id" in seen[0]
    assert fire("goal.created", "SparklerGoal")["confetti.celebrate"]["status"] == "skipped"
