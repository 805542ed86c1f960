"""Receivers whose store writes fail, and receivers that hang, in a real forking worker.

A failing receiver is retried alone (the others run once) and succeeds later; one that
keeps failing ends ``failed``, is listed by ``goalhub outcomes --failed`` and completed by
``goalhub retry``. A hanging receiver is stopped by the job timeout and holds no one up.
"""

from __future__ import annotations

import json

import pytest
from bson import ObjectId

from goalhub import tasks
from goalhub.queues import get_queue

from . import support

pytestmark = pytest.mark.reliability


def others(outcomes: list[dict], name: str) -> list[dict]:
    return [o for o in outcomes if o["receiver"] != name]


def final(goal_id: str, receiver: str, status: str) -> list[dict]:
    """Wait until ``receiver`` is ``status`` and every other receiver of the goal is final."""
    from goalhub.store import get_database

    db = get_database()

    def check():
        outcomes = list(db.outcomes.find({"goal_id": goal_id, "event": "goal.created"}))
        mine = [o for o in outcomes if o["receiver"] == receiver]
        if not mine or mine[0]["status"] != status:
            return None
        if any(o["status"] not in support.FINAL for o in others(outcomes, receiver)):
            return None
        return outcomes

    return support.wait_for(check, timeout=60, what=f"{receiver} to be {status}")


def test_a_receiver_whose_write_fails_is_retried_alone_and_succeeds(db, faults):
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    faults.worker("worker", GOALHUB_TEST_FLAKY="ExclusiveGoal", GOALHUB_TEST_FLAKY_FAILURES="2")
    goal_id = tasks.enqueue_create_goal(goal)

    outcomes = final(goal_id, "flaky_receiver", "ok")
    flaky = next(o for o in outcomes if o["receiver"] == "flaky_receiver")
    assert flaky["attempts"] == 3 and flaky["error"] is None
    assert db.flaky_runs.find_one({"_id": goal_id})["runs"] == 3
    assert db.flaky_effects.find_one({"_id": goal_id})["attempt"] == 3
    # The others ran once each, untouched by their neighbour's failures.
    assert {o["attempts"] for o in others(outcomes, "flaky_receiver") if o["status"] == "ok"} == {1}
    support.nothing_stuck()
    support.outbound_sent_once(db)


def test_a_receiver_that_keeps_failing_ends_failed_and_goalhub_retry_completes_it(db, faults, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "2")
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    faults.worker("worker", GOALHUB_TEST_FLAKY="ExclusiveGoal", GOALHUB_TEST_FLAKY_FAILURES="1000")
    goal_id = tasks.enqueue_create_goal(goal)

    outcomes = final(goal_id, "flaky_receiver", "failed")
    flaky = next(o for o in outcomes if o["receiver"] == "flaky_receiver")
    assert flaky["attempts"] == 3 and "simulated store write failure" in flaky["error"]
    assert all(o["status"] in support.FINAL for o in others(outcomes, "flaky_receiver"))
    support.wait_for(lambda: len(get_queue().failed_job_registry) == 1, timeout=10, what="the failed job")

    environment = support.env()
    listed = support.goalhub_cli("outcomes", "--failed", "--json", environment=environment)
    assert listed.returncode == 0, listed.stderr
    assert [o["id"] for o in json.loads(listed.stdout)] == [flaky["_id"]]

    (faults.dir / "repaired").write_text("the store is back")
    retried = support.goalhub_cli("retry", flaky["_id"], environment=environment)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    outcome = db.outcomes.find_one({"_id": flaky["_id"]})
    assert (outcome["status"], outcome["attempts"]) == ("ok", 4)
    assert db.flaky_effects.count_documents({"_id": goal_id}) == 1
    assert json.loads(support.goalhub_cli("outcomes", "--failed", "--json", environment=environment).stdout) == []


@pytest.mark.serial  # a 2 s job timeout against a worker's heartbeat: run alone, not beside the parallel suite
def test_a_hanging_receiver_is_stopped_by_the_job_timeout_and_holds_no_one(db, faults, monkeypatch):
    monkeypatch.setenv("GOALHUB_JOB_TIMEOUT", "2")
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    faults.worker("worker", GOALHUB_TEST_HANG="ExclusiveGoal")
    goal_id = tasks.enqueue_create_goal(goal)

    outcomes = final(goal_id, "hanging_receiver", "failed")
    hung = next(o for o in outcomes if o["receiver"] == "hanging_receiver")
    assert hung["attempts"] == 2 and "JobTimeoutException" in hung["error"]
    assert db.hang_runs.find_one({"_id": goal_id})["runs"] == 2
    # Every other receiver finished: the bindings and the RTC calls happened.
    assert {o["status"] for o in others(outcomes, "hanging_receiver")} <= support.FINAL
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == goal_id
    # 2 StopSnapshot + 1 analytics event, and nothing left running.
    support.wait_for(lambda: len(faults.server.requests) == 3 and not get_queue().started_job_registry.get_job_ids(
        cleanup=False), timeout=20, what="the other jobs to finish")
    assert len(faults.server.requests) == 3
