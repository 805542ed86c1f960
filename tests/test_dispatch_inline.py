"""Inline dispatch (issue 11): one job per goal, each receiver with its own outcome, try and
time budget; failed and overrun receivers retried alone; isolated receivers; the guard that
never runs a succeeded receiver twice; per-receiver settings from the environment.

Real embedded Redis, real RQ (an in-process ``SimpleWorker``: a job context, so receivers run
inline), inline plugins per test.
"""

from __future__ import annotations

import signal
import time

import pytest
from bson import ObjectId
from rq import SimpleWorker
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.timeouts import JobTimeoutException

import goalhub
from goalhub import budget, dispatch, receivers, tasks
from goalhub.connection import get_redis
from goalhub.queues import all_queues, get_queue, job_id


def goal_document(cls: str = "KaraokeGoal", **overrides) -> dict:
    return {"_id": str(ObjectId()), "_cls": cls, "active": True,
            "conditions": {"session_id": str(ObjectId())}, "levels": [{"target": 10}], "nbf": None, "exp": None,
            "context": {"type": "karaoke"}, "metadata": {"user_id": str(ObjectId())}, **overrides}


def finished_jobs() -> list[str]:
    return [jid for queue in all_queues() for jid in FinishedJobRegistry(queue=queue).get_job_ids()]


def outcomes(db, goal_id: str) -> dict[str, dict]:
    return {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal_id})}


class Counting:
    """Receivers that count their runs (the class's own list: one instance per test)."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    @goalhub.receiver("goal.created")
    def first(self, goal_id):
        self.runs.append("first")
        return {"pid": 1}

    @goalhub.receiver("goal.created")
    def second(self, goal_id):
        self.runs.append("second")


def test_a_goal_costs_one_job_and_its_receivers_run_inline(db, inline_plugin, drain):
    counting = Counting()
    inline_plugin(counting, "counting")
    goal = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() - 1)
    tasks.enqueue_create_goal(goal)
    drain()
    assert sorted(counting.runs) == ["first", "second"]
    assert finished_jobs() == [job_id("create", goal["_id"])]
    found = outcomes(db, goal["_id"])
    assert {o["status"] for o in found.values()} == {"ok"}
    assert {o["attempts"] for o in found.values()} == {1}
    # nbf had passed: the lifecycle receiver activated the goal in that same job, never early.
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert stored["active"] is True and stored["activated_at"] >= goal["nbf"]


def test_a_future_activation_is_still_scheduled_not_run(db, inline_plugin, drain):
    goal = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() + 3600)
    tasks.enqueue_create_goal(goal)
    drain()
    assert db.goals.find_one({"_id": ObjectId(goal["_id"])})["active"] is False
    from goalhub.queues import get_scheduler
    assert job_id("activate", goal["_id"]) in [job.id for job in get_scheduler().get_jobs()]


def test_a_raising_and_a_hanging_receiver_leave_the_others_ok_promptly(db, inline_plugin, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    ran: list[str] = []

    class Faulty:
        # pluggy calls later registrations first: the faulty ones run before the others.
        @goalhub.receiver("goal.created", budget=0.5)
        def hangs(self, goal_id):
            ran.append("hangs")
            while True:
                time.sleep(0.05)

        @goalhub.receiver("goal.created")
        def raises(self, goal_id):
            ran.append("raises")
            raise RuntimeError("downstream said 500")

    counting = Counting()
    inline_plugin(counting, "counting")
    inline_plugin(Faulty(), "faulty")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    began = time.time()
    # One burst: the create job, then the two retries (backoff 0), each alone.
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="ERROR")

    found = outcomes(db, goal["_id"])
    assert found["first"]["status"] == found["second"]["status"] == "ok"
    # Final within a second of the budget, though one neighbour hung and one raised.
    assert max(found["first"]["finished_at"], found["second"]["finished_at"]) - began < 0.5 + 1.0
    assert sorted(counting.runs) == ["first", "second"]
    hung = found["hangs"]
    assert (hung["status"], hung["attempts"], hung["timed_out"]) == ("failed", 2, True)
    assert "ReceiverTimeout" in hung["error"] and "budget of 0.5 s" in hung["error"]
    raised = found["raises"]
    assert (raised["status"], raised["attempts"], raised["timed_out"]) == ("failed", 2, False)
    assert "downstream said 500" in raised["error"]
    assert ran.count("hangs") == ran.count("raises") == 2
    # An inline run keeps the event's arguments only where a job needs them: its failures.
    assert raised["arguments"]["goal_id"] == hung["arguments"]["goal_id"] == goal["_id"]
    assert "arguments" not in found["first"] and "arguments" not in found["second"]
    # Retried alone: one job each, and the create job itself finished.
    failed = FailedJobRegistry(queue=get_queue()).get_job_ids()
    assert sorted(failed) == sorted(job_id("receiver", found[name]["_id"]) for name in ("hangs", "raises"))
    assert job_id("create", goal["_id"]) in finished_jobs()


def test_an_overrun_is_recorded_timed_out_while_its_retry_waits(db, inline_plugin, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF", "60")

    class Slow:
        @goalhub.receiver("goal.created", budget=0.2)
        def slow(self, goal_id):
            time.sleep(5)

    inline_plugin(Slow(), "slow")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="ERROR")
    slow = outcomes(db, goal["_id"])["slow"]
    assert slow["status"] == "timed out" and slow["attempts"] == 1
    assert slow["duration_ms"] < 1000
    # Its retry is its own job, scheduled after the backoff.
    assert get_queue().scheduled_job_registry.get_job_ids() == [job_id("receiver", slow["_id"])]
    assert dispatch.UNFINISHED >= {"timed out"}


def test_a_budget_inside_a_job_with_a_shorter_timeout_stops_before_the_job_dies(db, inline_plugin, monkeypatch):
    monkeypatch.setenv("GOALHUB_JOB_TIMEOUT", "1")
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    counting = Counting()

    class Hangs:
        @goalhub.receiver("goal.created", budget=30)
        def hangs(self, goal_id):
            time.sleep(30)

    inline_plugin(counting, "counting")
    inline_plugin(Hangs(), "hangs")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    began = time.monotonic()
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="ERROR")
    assert time.monotonic() - began < 5
    found = outcomes(db, goal["_id"])
    assert found["hangs"]["status"] == "failed" and "JobTimeoutException" in found["hangs"]["error"]
    assert "before the job's timeout" in found["hangs"]["error"]
    # The job was not killed by its timeout: it finished. The receivers after the hanging one,
    # whose turn came with under a second of the job left, were not started inline: each ran
    # once, in its own job, not cut by the job's timeout.
    after = {name: o for name, o in found.items() if name != "hangs"}
    assert {"first", "second"} <= set(after)
    assert all(o["status"] == "ok" and o["attempts"] == 1 for o in after.values()), after
    create = job_id("create", goal["_id"])
    assert found["hangs"]["job_id"] == create and create not in {o["job_id"] for o in after.values()}
    assert sorted(finished_jobs()) == sorted([create, *(o["job_id"] for o in after.values())])


def test_a_budget_nests_inside_an_outer_alarm_and_restores_it():
    fired: list[float] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        began = time.monotonic()
        with pytest.raises(budget.ReceiverTimeout):
            with budget.limit(0.2):
                time.sleep(2)
        assert 0.15 < time.monotonic() - began < 0.6
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0.3 < left < 0.85  # the outer alarm, re-armed with what was left of it
        time.sleep(1.0)
        assert len(fired) == 1 and 0.9 < fired[0] - began < 1.3  # and it fired on time
        # The outer alarm comes first: the block is stopped MARGIN before it, as a job timeout.
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        with pytest.raises(JobTimeoutException) as stopped:
            with budget.limit(10):
                time.sleep(2)
        assert not isinstance(stopped.value, budget.ReceiverTimeout)
        assert signal.getitimer(signal.ITIMER_REAL)[0] <= 0.3
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_an_isolated_receiver_always_runs_as_its_own_job(db, inline_plugin, drain):
    ran: list[str] = []

    class Slow:
        @goalhub.receiver("goal.created", isolated=True)
        def external(self, goal_id):
            ran.append(goal_id)
            return "sent"

    counting = Counting()
    inline_plugin(counting, "counting")
    inline_plugin(Slow(), "slow")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain()
    found = outcomes(db, goal["_id"])
    assert ran == [goal["_id"]] and found["external"]["status"] == "ok"
    assert found["external"]["arguments"]["goal_id"] == goal["_id"]  # its job read them there
    assert sorted(finished_jobs()) == sorted([job_id("create", goal["_id"]),
                                              job_id("receiver", found["external"]["_id"])])


def test_a_receiver_job_delivered_twice_after_success_runs_the_receiver_once(db, inline_plugin, drain):
    """The guard in ``run_receiver``: its horse may die between the receiver's effect and RQ marking
    the job finished; the recovered job (the same job, run again) must not run the receiver again."""
    ran: list[str] = []

    class Once:
        @goalhub.receiver("goal.created", isolated=True)
        def effect(self, goal_id):
            ran.append(goal_id)

    inline_plugin(Once(), "once")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain()
    outcome = outcomes(db, goal["_id"])["effect"]
    assert ran == [goal["_id"]] and outcome["status"] == "ok"
    # The same job, delivered again (recovered after a crash, or a duplicate enqueue).
    get_queue().enqueue(dispatch.run_receiver, outcome["_id"], job_id="receiver-again")
    get_queue().enqueue(dispatch.run_receiver, outcome["_id"], job_id="receiver-once-more")
    drain()
    assert ran == [goal["_id"]]
    assert db.outcomes.find_one({"_id": outcome["_id"]})["attempts"] == 1


def created_with_counting(inline_plugin, drain) -> tuple[Counting, dict]:
    """A goal created (and its create job run) with the ``Counting`` receivers installed."""
    counting = Counting()
    inline_plugin(counting, "counting")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain()
    return counting, goal


def unfinish(db, goal_id: str, entry: str) -> None:
    """Take ``entry`` (``<event>|<receiver id>``) out of the goal's ledger: its run never finished."""
    db.delivered.update_one({"_id": goal_id}, {"$pull": {"done": entry}})


def test_an_event_delivered_twice_runs_inline_receivers_once(db, inline_plugin, drain):
    counting, goal = created_with_counting(inline_plugin, drain)
    # The create job run again (redelivered): the goal exists, the event is sent again.
    get_queue().enqueue(tasks.create_goal, {**goal}, job_id="create-again")
    drain()
    assert sorted(counting.runs) == ["first", "second"]
    assert db.goals.count_documents({"_id": ObjectId(goal["_id"])}) == 1
    assert {o["attempts"] for o in outcomes(db, goal["_id"]).values() if o["status"] == "ok"} == {1}


def test_a_receiver_a_dead_horse_left_running_gets_its_arguments_from_the_redelivered_event(
        db, inline_plugin, drain):
    counting, goal = created_with_counting(inline_plugin, drain)
    # As a horse killed while ``second`` ran inline leaves it: running, first attempt, no arguments,
    # and not finished in the ledger (goalhub.ledger).
    second = outcomes(db, goal["_id"])["second"]
    assert "arguments" not in second
    db.outcomes.update_one({"_id": second["_id"]}, {"$set": {"status": "running", "attempts": 1},
                                                    "$unset": {"result": "", "finished_at": ""}})
    unfinish(db, goal["_id"], "goal.created|counting.second")
    get_queue().enqueue(tasks.create_goal, {**goal}, job_id="create-again")  # RQ runs the create job again
    drain()
    assert sorted(counting.runs) == ["first", "second", "second"]  # first is ok: not run again
    again = db.outcomes.find_one({"_id": second["_id"]})
    assert (again["status"], again["attempts"]) == ("ok", 2)
    assert again["arguments"]["goal_id"] == goal["_id"]


def test_a_receiver_killed_after_its_ledger_entry_is_made_ok_by_the_redelivered_event_not_run(
        db, inline_plugin, drain):
    """Found by the chaos soak: a worker killed between a receiver's ledger entry and its ``ok``
    outcome (a window as long as the outcome's write waits for the store's lock under load) left
    the outcome ``running`` for ever: the redelivered event saw the ledger, did not run the
    receiver (right) and did not touch its record (wrong)."""
    counting, goal = created_with_counting(inline_plugin, drain)
    second = outcomes(db, goal["_id"])["second"]
    db.outcomes.update_one({"_id": second["_id"]}, {"$set": {"status": "running", "attempts": 1},
                                                    "$unset": {"result": "", "finished_at": ""}})
    get_queue().enqueue(tasks.create_goal, {**goal}, job_id="create-again")  # RQ runs the create job again
    drain()
    assert sorted(counting.runs) == ["first", "second"]  # not run again: the ledger has it
    again = db.outcomes.find_one({"_id": second["_id"]})
    assert (again["status"], again["result"], again["attempts"]) == ("ok", dispatch.FINISHED_BEFORE, 1)
    assert again["finished_at"] >= again["queued_at"]


def test_a_receiver_job_without_arguments_fails_saying_so(db, inline_plugin, drain):
    counting, goal = created_with_counting(inline_plugin, drain)
    first = outcomes(db, goal["_id"])["first"]
    db.outcomes.update_one({"_id": first["_id"]}, {"$set": {"status": "failed"}})
    unfinish(db, goal["_id"], "goal.created|counting.first")  # as if its run had failed
    get_queue().enqueue(dispatch.run_receiver, first["_id"], job_id="receiver-no-arguments")
    drain()
    found = db.outcomes.find_one({"_id": first["_id"]})
    assert found["status"] == "failed" and "has no recorded arguments" in found["error"]
    assert sorted(counting.runs) == ["first", "second"]  # not run again


def test_a_disabled_receiver_is_not_delivered_to(db, inline_plugin, drain, monkeypatch):
    monkeypatch.setenv("GOALHUB_DISABLED_RECEIVERS", "counting.second, nope.nothing")
    counting = Counting()
    inline_plugin(counting, "counting")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain()
    assert counting.runs == ["first"]
    found = outcomes(db, goal["_id"])
    assert "second" not in found and found["first"]["status"] == "ok"
    assert "counting.second" not in db.events.find_one({"_id": f"goal.created:{goal['_id']}"})["receivers"]
    # Complete all the same: the event's record lists only what was delivered.
    assert dispatch.delivered_outcomes(goal["_id"])[1] is True


def test_per_receiver_settings_from_the_environment_beat_the_declaration(inline_plugin, monkeypatch):
    class Declared:
        @goalhub.receiver("goal.created", budget=2, retries=1, backoff=(3, 4))
        def tuned(self, goal_id):
            pass

    inline_plugin(Declared(), "declared")
    tuned = receivers.find_receiver("goal.created", "declared.tuned")
    assert (tuned.budget, tuned.retries, tuned.backoff, tuned.isolated) == (2.0, 1, (3, 4), False)
    monkeypatch.setenv("GOALHUB_RECEIVER_BUDGET__DECLARED_TUNED", "0.5")
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES__DECLARED_TUNED", "7")
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF__DECLARED_TUNED", "1,2,3")
    assert (tuned.budget, tuned.retries, tuned.backoff) == (0.5, 7, (1, 2, 3))
    assert tuned.settings()["budget"] == {"value": 0.5, "from": "env GOALHUB_RECEIVER_BUDGET__DECLARED_TUNED"}
    lifecycle = receivers.find_receiver("goal.created", "goalhub.lifecycle.schedule_lifecycle_tasks")
    monkeypatch.setenv("GOALHUB_RECEIVER_BUDGET", "9")
    assert lifecycle.budget == 9.0 and lifecycle.settings()["budget"]["from"] == "default"


def test_deliver_only_to_some_receivers_and_backfill_as_jobs_on_the_backfill_queue(db, inline_plugin):
    counting = Counting()
    inline_plugin(counting, "counting")
    arguments = {"goal_id": str(ObjectId()), "_cls": "KaraokeGoal", "active": True, "conditions": {},
                 "context": {}, "levels": [], "nbf": None, "exp": None}
    jobs = dispatch.deliver("goal.created", arguments, only=["counting.second"], backfill=True)
    assert len(jobs) == 1 and get_queue("backfill").job_ids == jobs
    assert set(outcomes(db, arguments["goal_id"])) == {"second"}
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="ERROR")
    assert counting.runs == ["second"]
    # Another receiver delivered later keeps the first in the event's record.
    dispatch.deliver("goal.created", arguments, only=["counting"])
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="ERROR")
    assert sorted(counting.runs) == ["first", "second"]
    receivers = db.events.find_one({"_id": f"goal.created:{arguments['goal_id']}"})["receivers"]
    assert sorted(receivers) == ["counting.first", "counting.second"]


def test_goalhub_hooks_shows_each_receivers_settings_and_where_they_come_from(inline_plugin, monkeypatch):
    import json

    from click.testing import CliRunner

    from goalhub.cli import main

    class Declared:
        @goalhub.receiver("goal.created", isolated=True, retries=1)
        def external(self, goal_id):
            pass

    inline_plugin(Declared(), "declared")
    monkeypatch.setenv("GOALHUB_RECEIVER_BUDGET__DECLARED_EXTERNAL", "12")
    monkeypatch.setenv("GOALHUB_DISABLED_RECEIVERS", "declared.external")
    result = CliRunner().invoke(main, ["hooks", "--json"])
    assert result.exit_code == 0, result.output
    [created] = [entry for entry in json.loads(result.stdout) if entry["event"] == "goal.created"]
    [external] = [r for r in created["receivers"] if r["name"] == "external"]
    assert external["settings"] == {
        "isolated": True, "disabled": True,
        "budget": {"value": 12.0, "from": "env GOALHUB_RECEIVER_BUDGET__DECLARED_EXTERNAL"},
        "retries": {"value": 1, "from": "declared"},
        "backoff": {"value": [0], "from": "default"},
    }
    text = CliRunner().invoke(main, ["hooks"]).output
    assert "DISABLED (GOALHUB_DISABLED_RECEIVERS), isolated job; budget 12.0 (env " in text


class Watching:
    """Two receivers; each notes, when it runs, the other's outcome status if the ledger already
    has the other finished."""

    def __init__(self, db) -> None:
        self.db = db
        self.seen: dict[str, str] = {}

    def _look(self, me: str, other: str, goal_id: str) -> None:
        from goalhub import ledger

        if f"goal.created|watching.{other}" in ledger.finished(self.db, goal_id):
            self.seen[me] = self.db.outcomes.find_one({"_id": f"goal.created:{goal_id}|watching.{other}"})["status"]

    @goalhub.receiver("goal.created")
    def first(self, goal_id):
        self._look("first", "second", goal_id)
        return {"n": 1}

    @goalhub.receiver("goal.created")
    def second(self, goal_id):
        self._look("second", "first", goal_id)
        return {"n": 2}


def test_an_events_inline_ok_outcomes_are_written_in_one_batch_after_their_ledger_entries(
        db, inline_plugin, drain, monkeypatch):
    """Each receiver that returns is in the ledger at once (what stops a second run); its ``ok``
    outcome is written with the event's others, in one write, when the inline runs are over."""
    batches: list[list[str]] = []
    update_each = dispatch.update_each

    def spy(collection, updates):
        batches.append([flt["_id"] for flt, _ in updates])
        update_each(collection, updates)

    monkeypatch.setattr(dispatch, "update_each", spy)
    watching = Watching(db)
    inline_plugin(watching, "watching")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain()
    # Whichever ran second found the other in the ledger, and its outcome not yet written ok.
    assert list(watching.seen.values()) == ["running"]
    found = outcomes(db, goal["_id"])
    ok = sorted(o["_id"] for o in found.values() if o["status"] == "ok")
    assert f"goal.created:{goal['_id']}|watching.first" in ok
    assert [sorted(batch) for batch in batches] == [ok]  # the event's inline oks, in one write
    for name, n in (("first", 1), ("second", 2)):
        record = found[name]
        assert record["result"] == {"n": n} and record["attempts"] == 1 and record["error"] is None
        assert record["queued_at"] <= record["started_at"] <= record["finished_at"] and record["duration_ms"] >= 0


def test_update_each_writes_every_update_on_each_store(tmp_path) -> None:
    import mongomock

    from goalhub.sqlite_store import SQLiteClient
    from goalhub.store import update_each

    for collection in (SQLiteClient(tmp_path)["goalhub"].outcomes, mongomock.MongoClient()["goalhub"].outcomes):
        collection.insert_many([{"_id": i, "status": "running"} for i in range(3)])
        update_each(collection, [({"_id": i}, {"$set": {"status": "ok", "n": i}}) for i in (0, 2)])
        update_each(collection, [])
        assert [(d["status"], d.get("n")) for d in collection.find(sort=[("_id", 1)])] == [
            ("ok", 0), ("running", None), ("ok", 2)]
