"""The reconciler's work follows the goals still pending, not every goal ever created (found at
issue 25's stop: it scanned every goal three times every 10 s: 1.7 s of CPU per run at 20,000
goals, and it runs inside the scheduler's poll). ``lifecycle.pending`` names the kinds of
lifecycle job a goal still waits for; a job that ran takes its kind out; an ended goal has none;
the reconciler reads only the goals it names, through an index. Older stores are migrated."""

from __future__ import annotations

import time

from bson import ObjectId
from test_redis_loss import STREAMER, Flaky, goal_document

from goalhub import scheduler, schema, tasks
from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.connection import get_redis
from goalhub.queues import get_scheduler


def pending(db, goal_id: str) -> list[str]:
    return sorted((db.goals.find_one({"_id": ObjectId(goal_id)}).get("lifecycle") or {}).get("pending", []))


def test_a_lifecycle_job_takes_its_kind_out_of_the_pending_list_when_it_runs(db, drain):
    goal = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() + 0.3, exp=time.time() + 0.6)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    assert pending(db, goal["_id"]) == ["activate", "end"]  # both scheduled in rq-scheduler
    time.sleep(0.7)
    drain()  # the scheduler moves them: activated, then ended
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert stored["activated_at"] and stored["end_reason"] == "expired"
    assert pending(db, goal["_id"]) == []
    assert stored["lifecycle"]["activate_at"] and stored["lifecycle"]["end_at"]  # the marks stay, for the record


def test_an_end_request_is_pending_until_its_job_ends_the_goal(db, drain):
    goal = goal_document()
    tasks.create_goal(goal)
    drain()
    assert pending(db, goal["_id"]) == []  # activated inline at creation: nothing ever pending
    answer = create_app().test_client().post(
        f"/goals/{goal['_id']}/end", headers={"Authorization": f"Bearer {mint_token(STREAMER)}"})
    assert answer.status_code == 202 and pending(db, goal["_id"]) == ["end-request"]
    drain()
    assert pending(db, goal["_id"]) == [] and db.goals.find_one({"_id": ObjectId(goal["_id"])})["end_reason"] == "ended"


def test_the_reconciler_reads_only_the_pending_goals(db, drain):
    done = time.time() - 3600
    history = [{**goal_document(), "_id": ObjectId(), "ended_at": done, "end_reason": "expired",
                "lifecycle": {"activate_at": done, "end_at": done}} for _ in range(300)]
    db.goals.insert_many(history)  # goals whose activation and end ran long ago
    lost = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() + 30)
    tasks.enqueue_create_goal(lost)
    drain(scheduled=False)
    get_redis().flushall()  # its scheduled activation is gone
    db.goals.update_one({"_id": ObjectId(lost["_id"])},  # its time has come (moved, rather than waited for)
                        {"$set": {"nbf": time.time() - 30, "lifecycle.activate_at": time.time() - 30}})
    before = db.goals.docs_examined
    assert scheduler.reconcile()["activate"] == [lost["_id"]]
    # Three queries (activate, end, end request) and the goal's own reads, not 3 x 301 documents.
    assert db.goals.docs_examined - before < 10
    drain(scheduled=False)
    assert db.goals.find_one({"_id": ObjectId(lost["_id"])})["active"] is True
    assert pending(db, lost["_id"]) == []
    assert scheduler.reconcile()["activate"] == []


def test_a_store_of_schema_1_gets_the_pending_kinds_of_its_goals(db):
    now = time.time()
    cases = {
        "waiting": {"active": False, "lifecycle": {"activate_at": now + 60, "end_at": now + 120}},
        "active": {"active": True, "lifecycle": {"activate_at": now - 60, "end_at": now + 60}},
        "ending": {"active": True, "end_requested_at": now - 5},
        "ended": {"active": False, "ended_at": now - 1, "lifecycle": {"activate_at": now - 60, "end_at": now - 1}},
        "plain": {"active": True},
    }
    ids = {}
    for name, fields in cases.items():
        ids[name] = db.goals.insert_one({**goal_document(), "_id": ObjectId(), **fields}).inserted_id
    db[schema.COLLECTION].update_one({"_id": "schema"}, {"$set": {"version": 1}}, upsert=True)
    assert schema.check(db) == schema.SCHEMA_VERSION == 2
    assert {name: pending(db, str(_id)) for name, _id in ids.items()} == {
        "waiting": ["activate", "end"], "active": ["end"], "ending": ["end-request"], "ended": [], "plain": []}
    assert schema.check(db) == 2  # once


def test_a_cancelled_activation_is_no_longer_pending(db, drain):
    goal = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() + 60)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    assert [job.id for job in get_scheduler().get_jobs()] == [f"activate-{goal['_id']}"]
    tasks.cancel("activate", goal["_id"])
    tasks.unmark("activate", goal["_id"])
    assert pending(db, goal["_id"]) == []


def test_the_reconciler_reads_only_the_unfinished_outcomes(db, inline_plugin, drain, monkeypatch):
    """The receiver retries Redis lost are found through the status index: the outcomes that
    retention keeps (30 days of them) are not read on every run."""
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF", "30")
    db.outcomes.insert_many([{"_id": f"goal.created:{ObjectId()}|old.done", "status": "ok", "event": "goal.created",
                              "goal_id": str(ObjectId()), "queued_at": time.time() - 3600,
                              "arguments": {"goal_id": "x"}} for _ in range(300)])
    inline_plugin(Flaky(), "flaky")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)  # fails inline: retrying, its retry in Redis
    get_redis().flushall()
    before = db.outcomes.docs_examined
    key = f"goal.created:{goal['_id']}|flaky.flaky"
    assert scheduler.reconcile(time.time() + 60)["receiver"] == [key]
    assert db.outcomes.docs_examined - before < 10
