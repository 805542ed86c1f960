"""The ``goalhub`` command, through click's CliRunner against the real embedded Redis and
store: plugins and hooks, firing signals (dry and real), outcomes and retry, tokens,
documents, and one clear line for every user mistake.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bson import ObjectId
from click.testing import CliRunner
from world import BundledGoalTypes

import goalhub
from goalhub import auth, outbound, plugins, tasks
from goalhub.cli import main
from goalhub.queues import all_queues, get_scheduler


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


class Receivers:
    """An inline plugin: one receiver per kind of class filter, one that can be made to fail."""

    def __init__(self) -> None:
        self.broken = False
        self.calls: list[tuple[str, dict]] = []

    @goalhub.receiver("goal.created", "ExclusiveGoal")
    def bind_exclusive(self, goal_id, _cls, context):
        self.calls.append(("bind_exclusive", {"goal_id": goal_id, "context": context}))
        return {"bound": goal_id}

    @goalhub.receiver("goal.created", "ShowGoal", "ShowFundingGoal")
    def bind_show(self, goal_id):
        self.calls.append(("bind_show", {"goal_id": goal_id}))

    @goalhub.receiver("goal.created", exclude=("KaraokeGoal",))
    def flaky(self, goal_id):
        if self.broken:
            raise RuntimeError("the feed service said no")
        self.calls.append(("flaky", {"goal_id": goal_id}))

    @goalhub.receiver("goal.added")
    def announce(self, goal_id, session_id, streamer_id):
        self.calls.append(("announce", {"session_id": session_id, "streamer_id": streamer_id}))


@pytest.fixture
def receivers(inline_plugin) -> Receivers:
    # The platform's goal classes, declared by the bundled plugins' goal types (the core
    # knows no class): their lifecycle, and the classes `--cls` accepts.
    inline_plugin(BundledGoalTypes(), "bundled-goal-types")
    plugin = Receivers()
    inline_plugin(plugin, "test-receivers")
    return plugin


def nothing_enqueued() -> bool:
    return all(queue.count == 0 for queue in all_queues()) and get_scheduler().count() == 0


# -- plugins and hooks ---------------------------------------------------------------


def test_plugins_lists_each_plugin_with_its_hooks_and_receivers(receivers):
    result = run("plugins", "--json")
    assert result.exit_code == 0, result.output
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    entry = listed["test-receivers"]
    assert entry["hooks"] == ["goal_added", "goal_created"]
    assert {(r["event"], r["name"], r["acts_on"]) for r in entry["receivers"]} == {
        ("goal.created", "bind_exclusive", "ExclusiveGoal"),
        ("goal.created", "bind_show", "ShowFundingGoal, ShowGoal"),
        ("goal.created", "flaky", "all but KaraokeGoal"),
        ("goal.added", "announce", "all"),
    }
    assert entry["error"] is None and entry["blocked"] is False
    # The core's own lifecycle plugin is listed only with --all, with its distribution.
    assert "goalhub.lifecycle" not in listed
    everything = {e["name"]: e for e in json.loads(run("plugins", "--all", "--json").stdout)}
    assert everything["goalhub.lifecycle"]["dist"] == "goalhub"
    assert everything["goalhub.lifecycle"]["version"] == goalhub.__version__

    human = run("plugins")
    assert "test-receivers" in human.stdout
    assert "goal.created  flaky  (all but KaraokeGoal)" in human.stdout


def test_a_plugin_that_fails_to_load_is_listed_with_its_error(monkeypatch, tmp_path):
    (tmp_path / "cli_good_plugin.py").write_text(
        "import goalhub\n@goalhub.receiver('goal.created', 'ShowGoal')\ndef good(goal_id):\n    return goal_id\n"
    )
    (tmp_path / "cli_bad_plugin.py").write_text("raise ImportError('No module named feedkit')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GOALHUB_PLUGINS", "cli_bad_plugin,cli_good_plugin")
    plugins.reset()

    result = run("plugins")
    assert result.exit_code == 0, result.output
    assert "cli_bad_plugin" in result.stdout
    assert "failed to load: ImportError: No module named feedkit" in result.stdout
    assert "cli_good_plugin" in result.stdout and "good  (ShowGoal)" in result.stdout

    listed = {e["name"]: e for e in json.loads(run("plugins", "--json").stdout)}
    assert listed["cli_bad_plugin"]["error"] == "ImportError: No module named feedkit"
    assert listed["cli_good_plugin"]["error"] is None


def test_hooks_lists_every_hookspec_with_receivers_in_call_order(receivers):
    result = run("hooks", "--json")
    assert result.exit_code == 0, result.output
    hooks = {entry["hook"]: entry for entry in json.loads(result.stdout)}
    assert list(hooks) == ["goal_created", "goal_added", "goal_ended", "goal_types"]
    created = [f"{r['plugin']}.{r['name']}" for r in hooks["goal_created"]["receivers"]]
    # pluggy's call order: the last registered plugin first, the core's lifecycle last.
    assert created == [r.id for r in goalhub.receivers.receivers("goal.created")]
    assert created[-1] == "goalhub.lifecycle.schedule_lifecycle_tasks"
    lifecycle = hooks["goal_created"]["receivers"][-1]
    assert lifecycle["acts_on"] == "all but KaraokeGoal, ShowGoal"
    assert (lifecycle["dist"], lifecycle["version"]) == ("goalhub", goalhub.__version__)
    assert [r["name"] for r in hooks["goal_added"]["receivers"]] == ["announce"]


def test_hooks_cls_shows_exactly_the_receivers_that_act_on_that_class(receivers):
    def acting(goal_class: str) -> set[str]:
        result = run("hooks", "--cls", goal_class, "--json")
        assert result.exit_code == 0, result.output
        created = next(e for e in json.loads(result.stdout) if e["hook"] == "goal_created")
        return {r["name"] for r in created["receivers"]}

    assert acting("ExclusiveGoal") == {"bind_exclusive", "flaky", "schedule_lifecycle_tasks"}
    assert acting("ShowGoal") == {"bind_show", "flaky"}
    assert acting("KaraokeGoal") == set()
    assert acting("TriggerPrivateGoal") == {"flaky", "schedule_lifecycle_tasks"}

    human = run("hooks", "--cls", "ShowGoal")
    assert "test-receivers.bind_show" in human.stdout
    assert "bind_exclusive" not in human.stdout and "schedule_lifecycle_tasks" not in human.stdout


def test_an_unknown_class_is_one_line_and_a_non_zero_exit(receivers):
    assert_one_line_error(run("hooks", "--cls", "ExclusivGoal"), "unknown goal class 'ExclusivGoal'")
    assert_one_line_error(run("fire", "goal.created", "--cls", "Nope"), "unknown goal class")


def test_an_unknown_signal_is_refused(receivers):
    result = run("fire", "goal.started", "--cls", "ExclusiveGoal")
    assert result.exit_code == 2
    assert "goal.created" in result.stderr and "Traceback" not in result.output


# -- fire ----------------------------------------------------------------------------


def test_fire_dry_run_lists_the_receivers_that_would_act_and_runs_nothing(receivers, db):
    result = run("fire", "goal.created", "--cls", "ShowGoal", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = {r["name"]: r["acts"] for r in json.loads(result.stdout)["receivers"]}
    assert plan == {
        "bind_exclusive": False,
        "bind_show": True,
        "flaky": True,
        "schedule_lifecycle_tasks": False,
    }
    human = run("fire", "goal.created", "--cls", "ShowGoal", "--dry-run")
    assert "dry run, nothing sent" in human.stdout
    assert receivers.calls == []
    assert db.outcomes.count_documents({}) == 0
    assert nothing_enqueued()


def test_fire_sends_the_real_signal_and_prints_each_receivers_outcome(receivers, db):
    goal_id, session_id = str(ObjectId()), str(ObjectId())
    result = run(
        "fire", "goal.created", "--cls", "ExclusiveGoal", "--goal-id", goal_id, "--session-id", session_id,
        "--context", '{"type": "exclusive", "exclusive_to": "room-1"}',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = {line.split()[2]: line.split()[0] for line in result.stdout.splitlines()[2:]}
    assert lines == {
        "test-receivers.bind_exclusive": "ok",
        "test-receivers.bind_show": "skipped",
        "test-receivers.flaky": "ok",
        "goalhub.lifecycle.schedule_lifecycle_tasks": "ok",
    }
    assert " ms" in result.stdout  # durations
    call = dict(receivers.calls)["bind_exclusive"]
    assert call["goal_id"] == goal_id
    # The goal type's sample, with --context merged in: the trigger it was created from exists.
    context = call["context"]
    assert context == {**context, "session_id": session_id, "type": "exclusive", "exclusive_to": "room-1"}
    trigger = db.goals.find_one({"_id": ObjectId(context["trigger_exclusive_goal_id"])})
    assert trigger["_cls"] == "TriggerExclusiveGoal" and trigger["test_fire"] is True
    outcome = db.outcomes.find_one({"_id": f"goal.created:{goal_id}|test-receivers.bind_exclusive"})
    assert outcome["status"] == "ok" and outcome["result"] == {"bound": goal_id}


def test_fire_goal_added_carries_the_session_and_streamer(receivers):
    session_id, streamer_id = str(ObjectId()), str(ObjectId())
    result = run(
        "fire", "goal.added", "--cls", "ShowGoal", "--session-id", session_id, "--streamer-id", streamer_id, "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(o["receiver"], o["status"]) for o in report["outcomes"]] == [("announce", "ok")]
    assert ("announce", {"session_id": session_id, "streamer_id": streamer_id}) in receivers.calls


def test_fire_exits_non_zero_when_a_receiver_fails(receivers, db, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    receivers.broken = True
    result = run("fire", "goal.created", "--cls", "ShowGoal")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 1
    assert "test-receivers.flaky" in failed[0] and "RuntimeError: the feed service said no" in failed[0]
    assert any(line.startswith("ok") and "bind_show" in line for line in result.stdout.splitlines())
    assert "goalhub retry --goal" in result.stderr


def test_outcomes_failed_then_retry_completes_the_receiver(receivers, db, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    receivers.broken = True
    goal_id = str(ObjectId())
    assert run("fire", "goal.created", "--cls", "ExclusiveGoal", "--goal-id", goal_id).exit_code == 1

    failed = json.loads(run("outcomes", "--failed", "--json").stdout)
    assert [o["id"] for o in failed] == [f"goal.created:{goal_id}|test-receivers.flaky"]
    assert failed[0]["error"] == "RuntimeError: the feed service said no"
    human = run("outcomes", "--goal", goal_id)
    assert f"goal.created:{goal_id}|test-receivers.flaky" in human.stdout

    receivers.broken = False
    result = run("retry", failed[0]["id"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[:3] == ["ok", "goal.created", "test-receivers.flaky"]
    assert json.loads(run("outcomes", "--failed", "--json").stdout) == []
    outcome = db.outcomes.find_one({"_id": failed[0]["id"]})
    assert (outcome["status"], outcome["attempts"]) == ("ok", 3)
    # Nothing left to retry: one clear line.
    assert_one_line_error(run("retry", failed[0]["id"]), "no failed outcome")
    assert_one_line_error(run("retry"), "nothing to retry")


def test_retry_all_failed_runs_every_failed_receiver_again(receivers, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    receivers.broken = True
    for _ in range(2):
        assert run("fire", "goal.created", "--cls", "ShowGoal").exit_code == 1
    assert len(json.loads(run("outcomes", "--failed", "--json").stdout)) == 2
    receivers.broken = False
    assert run("retry", "--all-failed").exit_code == 0
    assert json.loads(run("outcomes", "--failed", "--json").stdout) == []


# -- outbound, tokens, documents -----------------------------------------------------


def test_outbound_lists_recorded_calls_by_kind_and_goal():
    goal_id = str(ObjectId())
    outbound.send_once("rtc", f"StopSnapshot:{goal_id}:room-1", {"RoomId": "room-1", "TaskId": "t"}, goal_id=goal_id)
    outbound.send_once("notification", f"goal_added:{goal_id}", {"text": "hi"}, goal_id=goal_id)
    rtc = json.loads(run("outbound", "--kind", "rtc", "--json").stdout)
    assert [(r["kind"], r["payload"]["RoomId"], r["status"]) for r in rtc] == [("rtc", "room-1", "sent")]
    human = run("outbound", "--goal", goal_id)
    assert "StopSnapshot" in human.stdout and "notification" in human.stdout


def test_token_prints_only_a_token_that_verifies():
    sub = str(ObjectId())
    result = run("token", "--sub", sub, "--scope", "CREATOR", "--scope", "HUMAN", "--ttl", "120")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    principal = auth.verify_token(result.stdout.strip())
    assert principal.user_id == sub
    assert principal.scopes == {"CREATOR", "HUMAN"}
    assert principal.claims["exp"] - principal.claims["iat"] == 120
    default = auth.verify_token(run("token", "--sub", sub).stdout.strip())
    assert default.scopes == {"CREATOR"}
    assert_one_line_error(run("token", "--sub", "streamer-1"), "24-hex")


def test_goals_and_sessions_show_read_the_store(receivers, db, drain):
    session_id = str(ObjectId())
    db.sessions.insert_one({"_id": ObjectId(session_id), "user": str(ObjectId()), "active": True, "sources": []})
    goal = {
        "_id": str(ObjectId()),
        "_cls": "ShowGoal",
        "active": True,
        "conditions": {"session_id": session_id},
        "levels": [{"target": 300}],
        "nbf": None,
        "exp": None,
        "context": {"type": "show", "session_id": session_id},
        "metadata": {"user_id": "u"},
    }
    tasks.enqueue_create_goal(goal)
    drain()

    shown = json.loads(run("goals", "show", goal["_id"], "--json").stdout)
    assert shown["_id"] == goal["_id"] and shown["_cls"] == "ShowGoal"
    assert {o["receiver"]: o["status"] for o in shown["outcomes"]}["bind_show"] == "ok"
    human = run("goals", "show", goal["_id"])
    assert "ShowGoal" in human.stdout and "test-receivers.bind_show" in human.stdout

    session = json.loads(run("sessions", "show", session_id, "--json").stdout)
    assert [g["_id"] for g in session["goals"]] == [goal["_id"]]
    assert session_id in run("sessions", "show", session_id).stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["goals", "show", "not-an-id"], "GOAL_ID must be a 24-character hex id"),
        (["goals", "show", '{"$ne": null}'], "GOAL_ID must be a 24-character hex id"),
        (["goals", "show", "0123456789abcdef01234567"], "goal 0123456789abcdef01234567 not found"),
        (["sessions", "show", "0123456789abcdef01234567"], "not found"),
        (["outcomes", "--goal", "xyz"], "--goal must be a 24-character hex id"),
        (["fire", "goal.created", "--cls", "ShowGoal", "--goal-id", "12"], "--goal-id must be"),
        (["fire", "goal.created", "--cls", "ShowGoal", "--context", "{nope"], "--context is not JSON"),
    ],
)
def test_a_user_mistake_is_one_line_and_a_non_zero_exit(args, fragment):
    assert_one_line_error(run(*args), fragment)


def test_redis_down_is_one_line(receivers, monkeypatch):
    monkeypatch.setenv("GOALHUB_REDIS_URL", "redis://127.0.0.1:9/0")
    assert_one_line_error(run("fire", "goal.created", "--cls", "ShowGoal"), "Redis is not reachable (redis://127.0.0.1:9/0)")


def test_python_m_goalhub_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "goalhub", "goals", "show", "bad"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: GOAL_ID must be a 24-character hex id"
    assert result.stdout == ""


@pytest.mark.parametrize(("error", "line"), [
    ("ServerSelectionTimeoutError", "the store is not reachable: no server"),
    ("AutoReconnect", "the store is not reachable: no server"),
    ("DuplicateKeyError", "the store refused: no server"),
    ("OperationFailure", "the store refused: no server"),
])
def test_a_store_error_is_one_line_saying_whether_the_store_was_reached(error, line):
    from pymongo import errors

    from goalhub.cli import GoalhubGroup

    group = GoalhubGroup()

    @group.command()
    def broken() -> None:
        raise getattr(errors, error)("no server")

    result = CliRunner().invoke(group, ["broken"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert line in result.output, result.output


def test_store_upgrade_drops_the_index_an_earlier_release_made_and_waits_for_workers_to_stop(db, monkeypatch):
    from goalhub import backup, config

    if config.settings().MONGO_URI:  # the suite on another store (GOALHUB_TEST_STORE_URI)
        assert_one_line_error(run("store-upgrade"), "MongoDB")
        return
    assert run("store-upgrade").output.strip() == "the store is up to date"  # a store this release made
    client = db.client
    client._conn().execute("CREATE INDEX idx_rid ON idx (rid)")  # as an earlier release made every store
    monkeypatch.setattr(backup.liveness, "work", lambda: {"workers": {"goalhub": 1}, "scheduler_last_poll_age": None})
    assert_one_line_error(run("store-upgrade"), "stop the workers and the scheduler first", "scan every index entry")
    assert client.has_rid_index()  # refused: nothing dropped
    result = run("store-upgrade", "--force", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"dropped": ["idx_rid"]} and not client.has_rid_index()
    monkeypatch.undo()
    assert run("store-upgrade").output.strip() == "the store is up to date"
