"""rq-scheduler under stress: two scheduler processes never run one activation twice, and a
scheduler restarted after a goal's nbf passed still activates it (nothing scheduled is lost).

Activations are counted by the fault plugin (``GOALHUB_TEST_COUNT_ACTIVATIONS``), which
wraps ``goalhub.tasks.activate_goal`` in the worker: every run of the job is seen, not
only the ones that changed the goal.
"""

from __future__ import annotations

import time

import pytest
from bson import ObjectId

from goalhub import tasks

from . import support

pytestmark = pytest.mark.reliability


def countdown(db, nbf: float) -> str:
    goal_id = ObjectId()
    db.goals.insert_one({"_id": goal_id, "_cls": "TriggerExclusiveGoal", "active": False,
                         "conditions": {"session_id": str(ObjectId()), "exclusive_to": "room"},
                         "levels": [{"target": 60}], "nbf": nbf, "exp": None,
                         "context": {"type": "trigger_exclusive"}, "metadata": {"user_id": support.STREAMER}})
    return str(goal_id)


@pytest.fixture
def processes(tmp_path, faults):
    started: list = []

    def start(name: str, code: str | None = None):
        """A scheduler (``code``) or, by default, a worker of this test's kind."""
        code = code or faults.code
        environment = support.env(GOALHUB_PLUGINS="fault_plugin", GOALHUB_TEST_FAULT_DIR=str(faults.dir),
                                  GOALHUB_TEST_COUNT_ACTIVATIONS="1")
        process = support.start(name, code, environment, tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_two_schedulers_never_run_one_activation_twice(db, processes):
    processes("worker-1")
    processes("worker-2")
    processes("scheduler-1", support.SCHEDULER)
    processes("scheduler-2", support.SCHEDULER)
    now = time.time()
    goals = {countdown(db, now + 1 + 2 * i / 30): now + 1 + 2 * i / 30 for i in range(30)}
    for goal_id, nbf in goals.items():
        tasks.schedule("activate", goal_id, nbf)

    support.wait_for(lambda: db.goals.count_documents({"active": True}) == len(goals), timeout=30,
                     what="every goal to activate")
    time.sleep(1.5)  # room for a second run to show up
    runs = {r["_id"]: r for r in db.activation_runs.find()}
    assert set(runs) == set(goals)
    assert {r["runs"] for r in runs.values()} == {1}, runs
    assert {r["changed"] for r in runs.values()} == {1}
    for goal in db.goals.find():
        assert goal["activated_at"] >= goal["nbf"]  # never early
    assert support.scheduled_jobs() == []


def test_a_scheduler_restarted_after_nbf_still_activates_the_goal(db, processes):
    processes("worker")
    scheduler = processes("scheduler", support.SCHEDULER)
    nbf = time.time() + 1.5
    goal_id = countdown(db, nbf)
    tasks.schedule("activate", goal_id, nbf)
    scheduler.stop()  # stopped before nbf, with the activation still scheduled
    support.wait_for(lambda: time.time() > nbf + 1.5, timeout=10)
    assert db.goals.find_one({"_id": ObjectId(goal_id)})["active"] is False  # nobody moved it
    assert support.scheduled_jobs() == [f"activate-{goal_id}"]

    processes("scheduler-again", support.SCHEDULER)
    support.wait_for(lambda: db.goals.find_one({"_id": ObjectId(goal_id), "active": True}), timeout=20,
                     what="the late activation")
    time.sleep(0.5)
    assert db.activation_runs.find_one({"_id": goal_id})["runs"] == 1
