"""Redis goes away: the test owns its embedded Redis (under its own GOALHUB_HOME) and stops it.

During a request the API answers 503 and leaves nothing that blocks a retry; once Redis is
back, the same request (same x-request-id) succeeds, once. Jobs enqueued by create_goal
survive a Redis restart (append-only file) and a worker that lived through the outage
completes the flow.
"""

from __future__ import annotations

import threading
import time

import api_support
import pytest
import requests
from bson import ObjectId

from goalhub import config, connection, tasks
from goalhub.auth import mint_token
from goalhub.queues import get_queue

from . import support

pytestmark = pytest.mark.reliability


@pytest.fixture
def own_redis(monkeypatch):
    """The embedded Redis of this test's home, which the test may stop and start."""
    monkeypatch.delenv("GOALHUB_REDIS_URL")
    home = config.home()
    connection.ensure_embedded_redis(home)
    yield home
    connection.stop_embedded_redis(home)


def test_redis_stopped_during_a_request_is_503_and_the_same_request_succeeds_once_after(db, own_redis, tmp_path,
                                                                                     worker_kind):
    world = support.make_world(db)
    # api_support's exclusive type waits in prepare (GOALHUB_TEST_PREPARE_DELAY): Redis
    # is stopped while the request is inside, after its checks and before its enqueue.
    environment = support.env(GOALHUB_PLUGINS="api_support", GOALHUB_TEST_PREPARE_DELAY="2")
    server, base = api_support.start_api(environment, tmp_path, workers=1, threads=4)
    headers = {"Authorization": f"Bearer {mint_token(support.STREAMER)}", "x-request-id": "seed-000-request"}
    body = {"levels": [{"target": 300}], "nbf": round(time.time(), 3),
            "context": {"session_id": world.session, "trigger_exclusive_goal_id": world.trigger}}
    answers: list[requests.Response] = []

    def post() -> requests.Response:
        return requests.post(f"{base}/goals?type=exclusive", json=body, headers=headers, timeout=30)

    worker = None
    try:
        # The server's Redis connection exists before the outage: a goalhub process that first
        # connects while the embedded Redis is down starts it again (connection.redis_url).
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
        during = threading.Thread(target=lambda: answers.append(post()))
        during.start()
        time.sleep(0.5)
        assert connection.stop_embedded_redis(own_redis)
        during.join()
        [refused] = answers
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "queue_unavailable"
        # Nothing that blocks a retry: no claim on the trigger, no request record, no goal.
        trigger = db.goals.find_one({"_id": ObjectId(world.trigger)})
        assert "exclusive_goal_id" not in trigger["context"]
        assert db.requests.count_documents({}) == 0
        assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 0

        connection.ensure_embedded_redis(own_redis)  # back, from its append-only file
        accepted = post()
        assert accepted.status_code == 202, accepted.text
        replayed = post()
        assert replayed.status_code == 202 and replayed.json() == accepted.json()
        assert replayed.headers.get("Idempotent-Replayed") == "true"
        goal_id = accepted.json()["goal_id"]
        assert get_queue().count == 1

        worker = support.start("worker", support.WORKERS[worker_kind], environment, tmp_path)
        support.settled(goal_id)
        assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
        assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == goal_id
    finally:
        server.stop()
        if worker:
            worker.stop()


def test_jobs_enqueued_before_a_redis_restart_run_after_it(db, own_redis, tmp_path, use_plugins, worker_kind):
    use_plugins(*support.PLUGINS)
    outbound = support.OutboundServer()
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    tasks.create_goal(goal)  # the goal is written, its receivers' jobs enqueued
    queued = get_queue().count
    assert queued >= 4

    assert connection.stop_embedded_redis(own_redis)
    connection.ensure_embedded_redis(own_redis)
    assert get_queue().count == queued  # persisted in the append-only file

    worker = support.start("worker", support.WORKERS[worker_kind], support.env(**outbound.environment()), tmp_path)
    try:
        outcomes = support.settled(goal["_id"])
        assert {o["status"] for o in outcomes} <= support.FINAL
        assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
        support.nothing_stuck()
        support.outbound_sent_once(db)
        assert len(outbound.requests) == 3  # 2 StopSnapshot + 1 analytics event
    finally:
        worker.stop()
        outbound.stop()


def test_a_receiver_running_through_a_redis_restart_completes_once(db, own_redis, faults):
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    faults.worker("worker", GOALHUB_TEST_HOLD="ExclusiveGoal")
    goal_id = tasks.enqueue_create_goal(goal)
    faults.held("started")  # a receiver is running; the rest are queued behind it

    assert connection.stop_embedded_redis(own_redis)
    connection.ensure_embedded_redis(own_redis)
    faults.release()

    outcomes = support.settled(goal_id)
    assert all(o["attempts"] == 1 for o in outcomes if o["status"] == "ok")
    assert db.effects.find_one({"_id": goal_id})["applied"] == 1
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    support.nothing_stuck()
    support.outbound_sent_once(db)
    assert sum(support.calls_by_key(faults.server).values()) == 3


def test_a_worker_outlives_redis_gone_as_its_job_ends_and_the_flow_completes(db, own_redis, faults):
    """RQ's worker exits when Redis is gone as a job ends (it cannot record the end); goalhub's
    worker waits for Redis, declares itself dead so the job is recovered, and works on."""
    world = support.make_world(db)
    goal = support.exclusive_goal(world)
    worker = faults.worker("worker", GOALHUB_TEST_HOLD="ExclusiveGoal")
    goal_id = tasks.enqueue_create_goal(goal)
    faults.held("started")

    assert connection.stop_embedded_redis(own_redis)
    faults.release()  # the receiver ends while Redis is down
    support.wait_for(lambda: db.outcomes.find_one({"receiver": "held_receiver", "status": "ok"}),
                     timeout=30, what="the held receiver's outcome")
    time.sleep(1.0)
    assert worker.popen.poll() is None  # still running, waiting for Redis
    connection.ensure_embedded_redis(own_redis)

    outcomes = support.settled(goal_id)
    assert {o["status"] for o in outcomes} <= support.FINAL
    assert worker.popen.poll() is None
    assert db.effects.find_one({"_id": goal_id})["applied"] == 1
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    support.nothing_stuck()
    support.outbound_sent_once(db)
