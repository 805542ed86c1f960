"""Exactly-once outlives retention (goalhub.ledger): retention shortened to one second purges
a karaoke goal's outcome, event and outbound records; then backfill, a redelivery of the
event, a receiver job run again, ``goalhub retry`` and a resume call its receivers 0 more times."""

from __future__ import annotations

import time

import pytest
from bson import ObjectId
from reliability import support

from goalhub import dispatch, ledger, replay, retention, tasks
from goalhub.connection import get_redis

RECEIVERS_OF_KARAOKE = "analytics"


@pytest.fixture
def sink(use_plugins, monkeypatch):
    use_plugins(*support.PLUGINS)
    server = support.OutboundServer()
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    for name in retention.COLLECTIONS:
        monkeypatch.setenv(f"GOALHUB_RETENTION_{name.upper()}", "1")
    yield server
    server.stop()


def karaoke(db) -> dict:
    world = support.make_world(db)
    now = time.time()
    return {"_id": str(ObjectId()), "_cls": "KaraokeGoal", "active": True,
            "conditions": {"session_id": world.session}, "levels": [{"target": 30}], "nbf": None,
            "exp": round(now + 3600, 3), "context": {"type": "karaoke", "session_id": world.session},
            "metadata": {"user_id": support.STREAMER}}


def test_no_receiver_runs_again_once_retention_purged_its_outcome(db, sink, drain):
    goal = karaoke(db)
    tasks.create_goal(goal)
    drain()
    ran = {o["_id"] for o in db.outcomes.find({"goal_id": goal["_id"], "status": "ok"}) if o.get("attempts")}
    assert f"goal.created:{goal['_id']}|analytics.track_goals" in ran
    calls = len(sink.requests)
    assert calls >= 1  # the analytics event went to the sink
    assert ledger.finished(db, goal["_id"]) >= {key.split(":", 1)[0] + "|" + key.rsplit("|", 1)[1] for key in ran}

    time.sleep(1.1)
    purged = retention.purge(db)
    assert purged["outcomes"] >= len(ran) and purged["outbound"] >= 1
    assert db.outcomes.count_documents({"goal_id": goal["_id"]}) == 0

    # Backfill: every event is already done, nothing delivered, nothing paced.
    progress = replay.backfill(RECEIVERS_OF_KARAOKE, "goal.created", goal_class="KaraokeGoal")
    assert progress.delivered == 0 and progress.already_done >= 1
    drain()
    assert len(sink.requests) == calls

    # The event delivered again (a create_goal run again): its finished receivers are recorded
    # ok without a run.
    tasks.create_goal(goal)
    drain()
    assert len(sink.requests) == calls
    again = {o["_id"]: o for o in db.outcomes.find({"goal_id": goal["_id"]})}
    for key in ran:
        assert again[key]["status"] == "ok" and again[key]["result"] == dispatch.FINISHED_BEFORE

    # A receiver job run again (an RQ retry, a redelivered job), and `goalhub retry` / resume of
    # an outcome left failed: the ledger stops each.
    key = f"goal.created:{goal['_id']}|analytics.track_goals"
    assert dispatch.run_receiver(key) == {"status": "not run", "reason": "finished before"}
    db.outcomes.update_one({"_id": key}, {"$set": {"status": "failed"}})
    dispatch.retry_outcome(key)
    drain()
    db.outcomes.update_one({"_id": key}, {"$set": {"status": "failed"}})
    assert replay.resume(RECEIVERS_OF_KARAOKE)["redelivered"] == [key]
    drain()
    assert db.outcomes.find_one({"_id": key})["status"] == "ok"
    assert len(sink.requests) == calls

    # And once more after a second purge and Redis losing everything.
    time.sleep(1.1)
    retention.purge(db)
    get_redis().flushall()
    assert replay.backfill(RECEIVERS_OF_KARAOKE, "goal.created", goal_class="KaraokeGoal").delivered == 0
    tasks.create_goal(goal)
    drain()
    assert len(sink.requests) == calls
