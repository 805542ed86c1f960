"""The inline path in real forking workers: a kill between two inline receivers, a budget
overrun beside a raising receiver, and an ``isolated=True`` receiver killed mid-run.

Each ends with the guarantees of the other reliability tests: one goal, one ``ok`` per (event,
receiver), every effect and outbound call once, nothing stuck.
"""

from __future__ import annotations

import pytest
from bson import ObjectId

from goalhub import ledger, tasks
from goalhub.queues import get_queue, job_id

from . import support

pytestmark = pytest.mark.reliability


def by_receiver(outcomes: list[dict]) -> dict[str, dict]:
    return {o["receiver"]: o for o in outcomes}


def test_a_kill_between_two_inline_receivers_runs_only_the_unfinished_ones_again(db, faults):
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    cls = goal["_cls"]
    faults.worker("worker-1", GOALHUB_TEST_PRIOR=cls, GOALHUB_TEST_HOLD=cls)
    goal_id = tasks.enqueue_create_goal(goal)

    [horse] = faults.held("started")
    # prior_receiver ran: the ledger has it, and its ok outcome waits for the end of the event's
    # inline runs (written with the others in one batch); held_receiver is the next, inline in the
    # same horse, and the real plugins' receivers after it are taken by that horse (running, first
    # attempt), not begun.
    at_kill = by_receiver(list(db.outcomes.find({"goal_id": goal_id})))
    assert "goal.created|fault_plugin.prior_receiver" in ledger.finished(db, goal_id)
    assert (at_kill["prior_receiver"]["status"], at_kill["prior_receiver"]["attempts"]) == ("running", 1)
    assert "started_at" not in at_kill["prior_receiver"]
    assert (at_kill["held_receiver"]["status"], at_kill["held_receiver"]["attempts"]) == ("running", 1)
    later = [name for name, o in at_kill.items()
             if o["status"] == "running" and name not in ("prior_receiver", "held_receiver")]
    assert "bind_exclusive_goal_to_trigger_exclusive_goal" in later
    assert not any("started_at" in at_kill[name] for name in later)  # not begun
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"].get("exclusive_goal_id") is None
    support.kill9(horse)
    support.wait_for(lambda: not support.pid_alive(horse), timeout=10, what="the horse to die")
    faults.held("started", count=2)  # the create job is run again; the held receiver with it
    faults.release()

    outcomes = by_receiver(support.settled(goal_id))
    # Made ok from the ledger by the rerun's delivery, not run again.
    assert (outcomes["prior_receiver"]["status"], outcomes["prior_receiver"]["attempts"]) == ("ok", 1)
    assert outcomes["prior_receiver"]["result"] == {"finished_before": True}
    assert db.prior_runs.find_one({"_id": goal_id})["runs"] == 1  # not run again
    assert db.prior_effects.find_one({"_id": goal_id})["applied"] == 1
    assert outcomes["held_receiver"]["attempts"] == 2
    assert db.effects.find_one({"_id": goal_id})["applied"] == 1
    # Taken by the dead horse and by the rerun: two attempts each, the effects once (checked below).
    assert all(outcomes[name]["attempts"] == 2 for name in later)
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == goal_id
    support.nothing_stuck()
    support.outbound_sent_once(db)
    calls = support.calls_by_key(faults.server)
    assert sum(calls.values()) == 3 and set(calls.values()) == {1}, calls  # 2 StopSnapshot + analytics


@pytest.mark.serial  # a deadline of a second: run alone, not beside the parallel suite
def test_a_budget_overrun_and_a_raising_receiver_leave_the_others_ok_within_a_second(db, faults, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    cls = goal["_cls"]
    faults.worker("worker", GOALHUB_TEST_HANG=cls, GOALHUB_TEST_FLAKY=cls, GOALHUB_TEST_FLAKY_FAILURES="1000",
                  GOALHUB_RECEIVER_BUDGET__FAULT_PLUGIN_HANGING_RECEIVER="1")
    goal_id = tasks.enqueue_create_goal(goal)

    def final():
        found = by_receiver(list(db.outcomes.find({"goal_id": goal_id, "event": "goal.created"})))
        faulty = ("hanging_receiver", "flaky_receiver")
        if any(found.get(name, {}).get("status") != "failed" for name in faulty):
            return None
        if any(o["status"] not in support.FINAL for name, o in found.items() if name not in faulty):
            return None
        return found

    outcomes = support.wait_for(final, timeout=60, what="the faulty receivers to fail")
    hung, flaky = outcomes["hanging_receiver"], outcomes["flaky_receiver"]
    assert hung["attempts"] == 2 and hung["timed_out"] and "ReceiverTimeout" in hung["error"]
    assert db.hang_runs.find_one({"_id": goal_id})["runs"] == 2
    assert flaky["attempts"] == 2 and "simulated store write failure" in flaky["error"]
    others = [o for name, o in outcomes.items() if name not in ("hanging_receiver", "flaky_receiver")]
    assert {o["status"] for o in others} <= support.FINAL
    created = db.goals.find_one({"_id": ObjectId(goal_id)})["created_at"]
    # Every other outcome final within a second of the 1 s budget of the receiver that hung.
    assert max(o.get("finished_at", o.get("at")) for o in others) - created < 1 + 1.0
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == goal_id
    # Each retried alone: their own jobs failed, the create job did not. (A receiver records its
    # failure before its job raises; RQ files the job as failed a moment later.)
    expected = sorted(job_id("receiver", o["_id"]) for o in (hung, flaky))
    support.wait_for(lambda: len(get_queue().failed_job_registry.get_job_ids()) >= len(expected), timeout=10,
                     what="RQ to file both receiver jobs as failed")
    assert sorted(get_queue().failed_job_registry.get_job_ids()) == expected
    support.wait_for(lambda: len(faults.server.requests) == 3, timeout=20, what="2 StopSnapshot + analytics")


def test_an_isolated_receiver_runs_in_its_own_job_and_a_kill_there_touches_no_other(db, faults):
    world = support.make_world(db)
    goal = support.show_goal(world)
    cls = goal["_cls"]
    faults.worker("worker", GOALHUB_TEST_ISOLATED=cls, GOALHUB_TEST_PRIOR=cls)
    goal_id = tasks.enqueue_create_goal(goal)

    [horse] = faults.held("isolated")
    # The create job is over: every inline receiver, goal.added's too, is final already.
    at_kill = by_receiver(list(db.outcomes.find({"goal_id": goal_id})))
    assert at_kill["isolated_receiver"]["status"] == "running"
    assert all(o["status"] in support.FINAL for name, o in at_kill.items() if name != "isolated_receiver")
    if faults.kind == "fork":  # another work-horse ran the inline ones (a pool worker runs job after job)
        assert at_kill["prior_receiver"]["result"]["pid"] != horse
    support.kill9(horse)
    faults.held("isolated", count=2)  # its job is recovered and run again, alone
    faults.release()

    outcomes = by_receiver(support.settled(goal_id, ("goal.created", "goal.added")))
    assert outcomes["isolated_receiver"]["attempts"] == 2
    assert db.isolated_runs.find_one({"_id": goal_id})["runs"] == 2
    assert db.isolated_effects.find_one({"_id": goal_id})["applied"] == 1
    assert all(o["attempts"] == 1 for name, o in outcomes.items() if o["status"] == "ok" and name != "isolated_receiver")
    assert db.prior_runs.find_one({"_id": goal_id})["runs"] == 1
    support.nothing_stuck()
    support.outbound_sent_once(db)
    calls = support.calls_by_key(faults.server)
    assert sum(calls.values()) == 3 and set(calls.values()) == {1}, calls  # notification, Pusher, analytics
