"""``kill -9`` on a worker while a receiver, or ``create_goal`` itself, is running, for each
worker kind: a forking worker (the "horse" is its work-horse) and a pool of non-forking workers
(the "horse" is the pool worker running the job, the "worker" the pool's parent).

The moment is made certain by the fault plugin: the job writes a marker with its pid and
waits on a gate file. The test kills the work-horse (or the worker and its horse), starts
a new worker, opens the gate, and then checks: the goal exists once, every receiver ended
``ok`` and applied its effect once, nothing is left in RQ's started registry, and every
outbound call (RTC, notification, Pusher, analytics) reached the local services once.
"""

from __future__ import annotations

import signal
import time

import pytest
from bson import ObjectId
from rq import Worker

from goalhub import tasks
from goalhub.connection import get_redis

from . import support

pytestmark = pytest.mark.reliability


def check_one_effect_each(db, faults, goal_id: str, outcomes: list[dict], expected_calls: int) -> None:
    assert db.goals.count_documents({"_id": ObjectId(goal_id)}) == 1
    assert {o["status"] for o in outcomes} <= support.FINAL
    held = db.effects.find_one({"_id": goal_id})
    if held is not None:  # the held receiver's effect, however many times it ran
        assert held["applied"] == 1
    support.nothing_stuck()
    support.outbound_sent_once(db)
    calls = support.calls_by_key(faults.server)
    assert sum(calls.values()) == expected_calls, calls
    assert set(calls.values()) == {1}, calls


@pytest.mark.parametrize("victims", ["horse", "worker and horse"])
def test_a_receiver_killed_mid_run_is_run_again_and_applies_once(db, faults, victims):
    world = support.make_world(db)
    # The exclusive flow (RTC calls, analytics) when the horse dies; the show flow
    # (goal.added: notification, Pusher, analytics) when the whole worker dies.
    goal = support.exclusive_goal(world) if victims == "horse" else support.show_goal(world)
    first = faults.worker("worker-1", GOALHUB_TEST_HOLD=goal["_cls"])
    goal_id = tasks.enqueue_create_goal(goal)

    [horse] = faults.held("started")
    support.kill9(horse)
    if victims != "horse":
        support.kill9(first.popen.pid)
        first.popen.wait(timeout=10)
    support.wait_for(lambda: not support.pid_alive(horse), timeout=10, what="the horse to die")
    faults.worker("worker-2", GOALHUB_TEST_HOLD=goal["_cls"])
    faults.held("started", count=2)  # the receiver runs again, in a new horse
    faults.release()

    events = ("goal.created",) if victims == "horse" else ("goal.created", "goal.added")
    outcomes = support.settled(goal_id, events)
    held = next(o for o in outcomes if o["receiver"] == "held_receiver")
    assert held["status"] == "ok" and held["attempts"] >= 2
    assert db.held_runs.find_one({"_id": goal_id})["runs"] >= 2
    assert db.effects.find_one({"_id": goal_id})["applied"] == 1
    if victims == "horse":
        trigger = db.goals.find_one({"_id": ObjectId(world.trigger)})
        assert trigger["context"]["exclusive_goal_id"] == goal_id
        # 2 StopSnapshot (one per RTC source) + 1 analytics event.
        check_one_effect_each(db, faults, goal_id, outcomes, expected_calls=3)
    else:
        pairs = db.sessions.find_one({"_id": ObjectId(world.session)})["show_goal_pairs"]
        assert pairs == [{"funding_goal": world.funding, "show_goal": goal_id}]
        assert db.feed.count_documents({}) == 1
        # 1 notification + 1 Pusher event + 1 analytics event.
        check_one_effect_each(db, faults, goal_id, outcomes, expected_calls=3)


@pytest.mark.parametrize("victims", ["horse", "worker and horse"])
def test_create_goal_killed_mid_run_creates_one_goal_and_each_effect_once(db, faults, victims):
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    first = faults.worker("worker-1", GOALHUB_TEST_HOLD_CREATE="1")
    goal_id = tasks.enqueue_create_goal(goal)

    [horse] = faults.held("create")
    assert db.goals.count_documents({"_id": ObjectId(goal_id)}) == 1  # written before the signal
    support.kill9(horse)
    if victims != "horse":
        support.kill9(first.popen.pid)
        first.popen.wait(timeout=10)
    faults.worker("worker-2", GOALHUB_TEST_HOLD_CREATE="1")
    faults.held("create", count=2)  # create_goal runs again
    faults.release()

    outcomes = support.settled(goal_id)
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    assert db.create_holds.find_one({"_id": goal_id})["runs"] >= 2
    assert all(o["attempts"] == 1 for o in outcomes if o["status"] == "ok")  # receivers ran once
    check_one_effect_each(db, faults, goal_id, outcomes, expected_calls=3)


@pytest.mark.parametrize("worker_kind", ["pool"])
def test_a_pool_worker_killed_mid_job_is_replaced_and_the_goal_completes_each_receiver_once(db, faults):
    """No other worker is started: the pool replaces the dead one, recovers its job at once (not
    after RQ's 90 s heartbeat) and the goal completes, every receiver's effect once, within 15 s."""
    world = support.make_world(db)
    goal = support.show_goal(world)
    pool = faults.worker("pool", GOALHUB_TEST_HOLD=goal["_cls"])
    goal_id = tasks.enqueue_create_goal(goal)

    [running] = faults.held("started")
    assert running != pool.popen.pid  # the job runs in a pool worker, not in the pool's parent
    support.kill9(running)
    deadline = time.monotonic() + 15
    # Recovered and run again by the dead worker's replacement.
    support.wait_for(lambda: len(support.markers(faults.dir, "started")) >= 2, timeout=15, what="the rerun")
    recovered_in = 15 - (deadline - time.monotonic())
    [rerun] = set(support.markers(faults.dir, "started")) - {running}
    assert support.pid_alive(rerun) and pool.popen.poll() is None
    faults.release()

    outcomes = support.settled(goal_id, ("goal.created", "goal.added"), timeout=max(deadline - time.monotonic(), 0.1))
    held = next(o for o in outcomes if o["receiver"] == "held_receiver")
    assert held["status"] == "ok" and held["attempts"] >= 2
    pairs = db.sessions.find_one({"_id": ObjectId(world.session)})["show_goal_pairs"]
    assert pairs == [{"funding_goal": world.funding, "show_goal": goal_id}]
    assert db.goals.count_documents({"_cls": "ShowGoal"}) == 1
    assert db.feed.count_documents({}) == 1
    # 1 notification + 1 Pusher event + 1 analytics event.
    check_one_effect_each(db, faults, goal_id, outcomes, expected_calls=3)
    print(f"\n[reliability] pool worker killed mid-job: its job ran again {recovered_in:.2f} s later, "
          f"the goal settled {15 - (deadline - time.monotonic()):.2f} s after the kill")


@pytest.mark.parametrize("worker_kind", ["fork"])  # a named worker, and its horse
def test_a_worker_restarted_under_the_name_of_its_killed_self_takes_over_and_the_job_completes_once(db, faults):
    """systemd's ``goalhub-worker@`` restarts a killed worker under the same ``--name``: RQ
    refused it ("There exists an active worker named ...") until the dead entry expired, and the
    job sat ``started`` meanwhile. Now the new worker declares the dead one dead, recovers its
    job at once and runs it again."""
    world = support.make_world(db)
    goal = support.show_goal(world)
    first = faults.worker("worker-1", worker_name="goalhub-test-1", GOALHUB_TEST_HOLD=goal["_cls"])
    goal_id = tasks.enqueue_create_goal(goal)

    [horse] = faults.held("started")
    support.kill9(horse)
    support.kill9(first.popen.pid)
    first.popen.wait(timeout=10)
    support.wait_for(lambda: not support.pid_alive(horse), timeout=10, what="the horse to die")
    # The dead worker's entry is still there, not marked dead: what RQ refused to start over.
    dead = Worker.find_by_key(Worker.redis_worker_namespace_prefix + "goalhub-test-1", connection=get_redis())
    assert dead is not None and dead.death_date is None and dead.pid == first.popen.pid

    second = faults.worker("worker-2", worker_name="goalhub-test-1", GOALHUB_TEST_HOLD=goal["_cls"])
    faults.held("started", count=2)  # the receiver runs again, in the new worker's horse
    assert second.popen.poll() is None, second.output()
    faults.release()

    outcomes = support.settled(goal_id, ("goal.created", "goal.added"))
    held = next(o for o in outcomes if o["receiver"] == "held_receiver")
    assert held["status"] == "ok" and held["attempts"] >= 2
    assert db.effects.find_one({"_id": goal_id})["applied"] == 1
    check_one_effect_each(db, faults, goal_id, outcomes, expected_calls=3)
    assert "taking over its name" in second.log_path.read_text()
    assert second.popen.poll() is None, second.output()


@pytest.mark.parametrize("worker_kind", ["fork"])  # a named worker, and its horse
def test_a_name_held_by_a_live_worker_is_not_taken(db, faults):
    """Two workers started under one name by mistake: the second is refused, the first keeps
    its name and its job."""
    first = faults.worker("worker-1", worker_name="goalhub-test-2")
    support.wait_for(lambda: "goalhub-test-2" in {w.name for w in Worker.all(connection=get_redis())},
                     timeout=30, what="the first worker to register")
    second = faults.worker("worker-2", worker_name="goalhub-test-2")
    support.wait_for(lambda: second.popen.poll() is not None, timeout=30, what="the second worker to be refused")
    assert "There exists an active worker named" in second.output()
    assert first.popen.poll() is None


def test_sigterm_to_the_worker_alone_finishes_the_job_in_hand(db, faults):
    """What systemd's ``KillMode=mixed`` does (deploy/systemd/goalhub-worker@.service and
    goalhub-pool@.service): SIGTERM to the main process only. A forking worker is not signalled
    in its horse; a pool's parent asks its worker to stop (RQ's ``WorkerPool``: SIGINT, one
    signal). Either way a warm shutdown: the job in hand finishes, its receiver run once, on its
    first attempt, nothing runs it again, and the process exits 0."""
    world = support.make_world(db)
    goal = support.show_goal(world)
    # A forking worker as its unit runs it, under a fixed name (a pool names its workers itself).
    name = "goalhub-test-3" if faults.kind == "fork" else None
    worker = faults.worker("worker-1", worker_name=name, GOALHUB_TEST_HOLD=goal["_cls"])
    goal_id = tasks.enqueue_create_goal(goal)
    [running] = faults.held("started")  # the horse, or the pool's worker
    assert running != worker.popen.pid
    worker.popen.send_signal(signal.SIGTERM)
    support.wait_for(lambda: "warm shut down requested" in worker.log_path.read_text(), timeout=30,
                     what="the worker to begin its warm shutdown")
    assert support.pid_alive(running) and worker.popen.poll() is None
    faults.release()
    assert worker.popen.wait(timeout=60) == 0, worker.output()
    held = db.held_runs.find_one({"_id": goal_id})
    assert held["runs"] == 1 and held["pids"] == [running]
    assert db.effects.find_one({"_id": goal_id})["applied"] == 1
    outcomes = support.settled(goal_id, ("goal.created", "goal.added"))
    assert next(o for o in outcomes if o["receiver"] == "held_receiver")["attempts"] == 1
    assert len(support.markers(faults.dir, "started")) == 1  # no replacement worker ran it again
