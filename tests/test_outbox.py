# ruff: noqa: F811  (the fixtures imported from test_api are taken as arguments)
"""Accepted means stored (goalhub.outbox): a goal answered 202 is in the store with its claims
before the answer, and is created once by whatever publishes it again after Redis lost its job;
one that can no longer be created releases its claims, fails with a reason and is counted."""

from __future__ import annotations

import time

import pytest
from bson import ObjectId
from test_api import client, countdown, exclusive_body, world  # noqa: F401  (test_api's fixtures, used by name)

from goalhub import outbox, scheduler, tasks
from goalhub.connection import get_redis
from goalhub.queues import get_queue
from goalhub.worker import RecoveringSimpleWorker


def accept(client, w, body=None, path="/goals?type=exclusive"):
    answer = client.post(path, json=body or exclusive_body(w), headers={"Authorization": f"Bearer {w.token}"})
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["goal_id"]


def later() -> float:
    """A moment past the relay's grace: the records accepted now are due."""
    return time.time() + 60


def test_an_accepted_goal_is_stored_with_its_claims_before_the_202(client, world, db):
    goal_id = accept(client, world)
    record = db.accepted.find_one({"_id": ObjectId(goal_id)})
    assert record["state"] == "creating" and record["goal_type"] == "exclusive"
    assert record["goal"]["_cls"] == "ExclusiveGoal" and record["session_id"] == world.session
    assert [c["field"] for c in record["claims"]] == ["context.exclusive_goal_id"]
    trigger = db.goals.find_one({"_id": ObjectId(world.trigger)})
    assert trigger["context"]["exclusive_goal_id"] == goal_id
    assert db.goals.count_documents({"_id": ObjectId(goal_id)}) == 0
    [job] = get_queue().get_jobs()
    assert job.id == f"create-{goal_id}" and job.args == (goal_id,)


def test_a_goal_whose_job_redis_lost_is_created_once_by_the_relay(client, world, db, drain):
    goal_id = accept(client, world)
    get_redis().flushall()  # Redis loses everything: the create job is gone
    assert get_queue().count == 0
    # GET reads the store, not the job.
    got = client.get(f"/goals/{goal_id}", headers={"Authorization": f"Bearer {world.token}"})
    assert got.status_code == 200 and got.get_json()["state"] == "creating"
    assert outbox.requeue_accepted(db, time.time()) == []  # within the grace: the API may still enqueue
    assert scheduler.reconcile(later())["create"] == [goal_id]
    assert scheduler.reconcile(later())["create"] == []  # its job is pending now: not published twice
    drain()
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    assert db.accepted.count_documents({}) == 0
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == goal_id
    outcomes = list(db.outcomes.find({"goal_id": goal_id}))
    assert outcomes and {o["status"] for o in outcomes} <= {"ok", "skipped"}
    # The relay run again after the creation: nothing left to publish, and the job run again
    # (a redelivery) creates nothing more.
    assert scheduler.reconcile(later())["create"] == []
    from goalhub.tasks import create_goal

    assert create_goal(goal_id) == goal_id
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    assert {o["attempts"] for o in db.outcomes.find({"goal_id": goal_id, "status": "ok"})} == {1}


def test_a_goal_whose_type_was_uninstalled_fails_releases_its_claims_and_is_counted(
        client, world, db, drain, monkeypatch):
    from goalhub import plugins

    goal_id = accept(client, world)
    get_redis().flushall()
    installed = plugins.goal_types()
    monkeypatch.setattr(plugins, "goal_types", lambda: {k: v for k, v in installed.items() if k != "exclusive"})
    assert scheduler.reconcile(later())["create"] == [goal_id]
    drain()
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 0
    record = db.accepted.find_one({"_id": ObjectId(goal_id)})
    assert record["state"] == "failed" and "'exclusive' is not installed" in record["reason"]
    assert "exclusive_goal_id" not in db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]
    got = client.get(f"/goals/{goal_id}", headers={"Authorization": f"Bearer {world.token}"}).get_json()
    assert got["state"] == "failed" and "not installed" in got["reason"]
    assert scheduler.reconcile(later())["create"] == []  # failed is final: never published again
    monkeypatch.setattr(plugins, "goal_types", lambda: installed)
    # The trigger is free again: a new exclusive goal may bind it.
    accept(client, world)


def test_a_goal_whose_job_keeps_failing_is_failed_after_the_last_publish(client, world, db):
    goal_id = accept(client, world)
    for _ in range(outbox.MAX_PUBLISHES):
        get_redis().flushall()
        assert scheduler.reconcile(later())["create"] == [goal_id]
    get_redis().flushall()
    assert scheduler.reconcile(later())["create"] == []
    record = db.accepted.find_one({"_id": ObjectId(goal_id)})
    assert record["state"] == "failed" and f"after {outbox.MAX_PUBLISHES} attempts" in record["reason"]
    assert "exclusive_goal_id" not in db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]


def test_a_refused_claim_leaves_no_accepted_record(client, world, db):
    accept(client, world)
    refused = client.post("/goals?type=exclusive", json=exclusive_body(world),
                          headers={"Authorization": f"Bearer {world.token}"})
    assert refused.status_code == 409
    assert db.accepted.count_documents({}) == 1


def test_the_open_goal_cap_counts_goals_being_created(client, world, db, drain, monkeypatch):
    open_goals = db.goals.count_documents({"conditions.session_id": world.session, "ended_at": {"$exists": False}})
    monkeypatch.setenv("GOALHUB_MAX_OPEN_GOALS", str(open_goals + 1))  # room for one more
    accept(client, world, countdown(world), "/goals?type=trigger_exclusive")  # queued, not stored yet
    refused = client.post("/goals?type=trigger_exclusive", json=countdown(world),
                          headers={"Authorization": f"Bearer {world.token}"})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "too_many_open_goals"
    drain()  # created: counted once, not as a goal and a record
    refused = client.post("/goals?type=trigger_exclusive", json=countdown(world),
                          headers={"Authorization": f"Bearer {world.token}"})
    assert refused.status_code == 422


@pytest.mark.parametrize("published", [False, True])
def test_a_failed_enqueue_withdraws_the_record_unless_a_relay_published_it(client, world, db, monkeypatch,
                                                                           published):
    from goalhub.api import goals as goals_api

    def refused(goal_id: str, **_: object) -> None:
        if published:  # a relay took the record between the store write and this enqueue
            db.accepted.update_one({"_id": ObjectId(goal_id)}, {"$inc": {"publishes": 1}})
        raise ConnectionError("Redis refused the job")

    monkeypatch.setattr(goals_api.outbox, "enqueue", refused)
    answer = client.post("/goals?type=exclusive", json=exclusive_body(world),
                         headers={"Authorization": f"Bearer {world.token}"})
    trigger = db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]
    if published:
        assert answer.status_code == 202
        assert trigger["exclusive_goal_id"] == answer.get_json()["goal_id"]
        assert db.accepted.count_documents({"state": "creating"}) == 1
    else:
        assert answer.status_code >= 500
        assert "exclusive_goal_id" not in trigger
        assert db.accepted.count_documents({}) == 0


def test_a_goal_whose_job_keeps_raising_is_failed_with_its_jobs_last_error(client, world, db, monkeypatch):
    """The reason names the job's own last error (RQ's latest result), not only that it failed."""
    def refused(*args, **kwargs):
        raise RuntimeError("the store refused it")

    monkeypatch.setattr(tasks, "create_goal", refused)  # the job's function, looked up by name when it runs
    goal_id = accept(client, world)
    for _ in range(outbox.MAX_PUBLISHES + 1):
        RecoveringSimpleWorker([get_queue()], connection=get_redis()).work(burst=True)
        scheduler.reconcile(later())
    record = db.accepted.find_one({"_id": ObjectId(goal_id)})
    assert record["state"] == "failed", record
    assert record["reason"] == (f"not created after {outbox.MAX_PUBLISHES} attempts: "
                                "RuntimeError: the store refused it")
