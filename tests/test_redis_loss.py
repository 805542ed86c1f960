"""Every guarantee survives Redis losing everything (issue 21; the README's table "What lives
in Redis, and what happens when Redis loses it"): one test per row that matters, each
flushing Redis at the worst moment for it, then letting the reconciler rebuild from the store.
Accepted creates: tests/test_outbox.py and tests/reliability/test_redis_data_loss.py;
backfills in progress: tests/test_replay.py."""

from __future__ import annotations

import time

from bson import ObjectId

import goalhub
from goalhub import breaker, replay, scheduler, tasks
from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.connection import get_redis
from goalhub.queues import get_queue, get_scheduler, job_id

STREAMER = "6800a9073e0c346531958b03"


def later(seconds: float = 60) -> float:
    return time.time() + seconds


def goal_document(cls: str = "KaraokeGoal", **overrides) -> dict:
    return {"_id": str(ObjectId()), "_cls": cls, "active": True,
            "conditions": {"session_id": str(ObjectId())}, "levels": [{"target": 10}], "nbf": None, "exp": None,
            "context": {"type": "karaoke"}, "metadata": {"user_id": STREAMER}, **overrides}


class Flaky:
    """A receiver that fails its first run (then its retry waits in Redis) and succeeds after."""

    def __init__(self) -> None:
        self.runs = 0

    @goalhub.receiver("goal.created", "KaraokeGoal")
    def flaky(self, goal_id):
        self.runs += 1
        if self.runs == 1:
            raise ConnectionError("the downstream is down")


def test_a_receiver_retry_lost_with_redis_runs_once_from_the_store(db, inline_plugin, drain, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF", "30")
    flaky = Flaky()
    inline_plugin(flaky, "flaky")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)  # the receiver fails inline: retrying, its retry scheduled in Redis
    key = f"goal.created:{goal['_id']}|flaky.flaky"
    assert db.outcomes.find_one({"_id": key})["status"] == "retrying"
    assert get_queue().scheduled_job_registry.get_job_ids() == [job_id("receiver", key)]
    assert scheduler.reconcile(later())["receiver"] == []  # its job is pending: left alone
    get_redis().flushall()
    assert scheduler.reconcile(later())["receiver"] == [key]
    assert scheduler.reconcile(later())["receiver"] == []  # enqueued once
    drain()
    assert db.outcomes.find_one({"_id": key})["status"] == "ok" and flaky.runs == 2


def test_a_scheduled_activation_lost_with_redis_happens_from_the_store(db, drain):
    goal = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() + 30)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)  # the lifecycle receiver schedules activate_goal at nbf in rq-scheduler
    assert [job.id for job in get_scheduler().get_jobs()] == [f"activate-{goal['_id']}"]
    get_redis().flushall()
    assert scheduler.reconcile(time.time())["activate"] == []  # not due yet
    # Its time comes (moved, rather than waited for): the reconciler activates it, late.
    db.goals.update_one({"_id": ObjectId(goal["_id"])}, {"$set": {"nbf": time.time() - 30,
                                                                   "lifecycle.activate_at": time.time() - 30}})
    assert scheduler.reconcile()["activate"] == [goal["_id"]]
    drain(scheduled=False)
    assert db.goals.find_one({"_id": ObjectId(goal["_id"])})["active"] is True


def test_an_end_request_lost_with_redis_ends_the_goal_from_the_store(db, drain):
    goal = goal_document()
    tasks.create_goal(goal)
    drain()
    client = create_app().test_client()
    answer = client.post(f"/goals/{goal['_id']}/end", headers={"Authorization": f"Bearer {mint_token(STREAMER)}"})
    assert answer.status_code == 202
    get_redis().flushall()  # the end job is gone; the goal is marked end_requested_at in the store
    assert scheduler.reconcile(later())["end-request"] == [goal["_id"]]
    drain()
    ended = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert ended["end_reason"] == "ended" and ended["active"] is False
    assert db.events.count_documents({"_id": f"goal.ended:{goal['_id']}"}) == 1
    assert scheduler.reconcile(later())["end-request"] == []


def test_idempotency_records_are_in_the_store_and_outlive_redis(db, inline_plugin):
    import api_support

    inline_plugin(api_support, "test-goal-types")
    session = ObjectId()
    db.sessions.insert_one({"_id": session, "user": STREAMER, "active": True, "sources": [],
                            "exclusive_goal_pairs": {}, "show_goal_pairs": []})
    client = create_app().test_client()
    headers = {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR'])}", "Idempotency-Key": "once"}
    body = {"levels": [{"target": 60}], "context": {"session_id": str(session)}, "nbf": time.time() + 5,
            "exp": time.time() + 65}
    first = client.post("/goals?type=trigger_exclusive", json=body, headers=headers)
    get_redis().flushall()
    again = client.post("/goals?type=trigger_exclusive", json=body, headers=headers)
    assert again.status_code == 202 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert db.accepted.count_documents({}) == 1


class Broken:
    @goalhub.receiver("goal.created", "KaraokeGoal")
    def broken(self, goal_id):
        raise ConnectionError("down")


def test_a_tripped_breaker_lost_with_redis_leaves_its_paused_outcomes_resumable(db, inline_plugin, drain,
                                                                                monkeypatch):
    monkeypatch.setenv("GOALHUB_BREAKER_THRESHOLD", "1")
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    inline_plugin(Broken(), "broken")
    first, second = goal_document(), goal_document()
    tasks.enqueue_create_goal(first)
    drain()  # fails: the breaker trips
    breaker.forget()
    tasks.enqueue_create_goal(second)
    drain()  # paused, in the store
    key = f"goal.created:{second['_id']}|broken.broken"
    assert db.outcomes.find_one({"_id": key})["status"] == "paused"
    get_redis().flushall()  # the breaker's state is gone: the receiver is closed again
    breaker.forget()
    assert breaker.tripped() == {}
    assert db.outcomes.find_one({"_id": key})["status"] == "paused"  # not lost, not run
    assert scheduler.reconcile(later())["receiver"] == []  # paused waits for an operator
    assert key in replay.resume("broken")["redelivered"]


NOTED: list[str] = []


def noted(goal_id: str) -> None:
    """A plugin's own job (what the analytics plugin's ``track`` is)."""
    NOTED.append(goal_id)


class HandsOff:
    @goalhub.receiver("goal.created", "KaraokeGoal")
    def hand_off(self, goal_id):
        goalhub.enqueue_once(noted, goal_id, job_id=goalhub.job_id("noted", goal_id))


def test_a_plugin_job_lost_with_redis_runs_from_the_store(db, inline_plugin, drain):
    from rq import SimpleWorker

    from goalhub.queues import all_queues

    NOTED.clear()
    inline_plugin(HandsOff(), "hands_off")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, max_jobs=1)  # the create job only
    jid = goalhub.job_id("noted", goal["_id"])
    assert db.jobs.find_one({"_id": jid})["func"] == "test_redis_loss.noted"
    get_redis().flushall()  # the receiver is ok; its job is gone
    assert scheduler.reconcile(later())["job"] == [jid]
    assert scheduler.reconcile(later())["job"] == []
    drain()
    assert NOTED == [goal["_id"]]
    assert db.jobs.count_documents({}) == 0  # ran: its record is done
