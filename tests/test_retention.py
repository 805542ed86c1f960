"""Issue 12, retention: every collection goalhub writes expires (goalhub.retention).

On the embedded store by ``purge`` (run by the scheduler process by itself, and by
``goalhub purge``); on mongomock (as on MongoDB) by the TTL index on ``stored_at``.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from bson import ObjectId
from click.testing import CliRunner

import goalhub
from goalhub import dispatch, outbound, retention, store
from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.cli import main
from goalhub.testing import ChildProcess

STREAMER = "6800a9073e0c346531958b03"
MONTH = 31 * 86400


class Quiet:
    @goalhub.receiver("goal.created", "ExclusiveGoal")
    def quiet(self, goal_id):
        outbound.send_once("sink", f"quiet:{goal_id}", {"goal_id": goal_id}, goal_id=goal_id)


def write_one_of_each(db) -> str:
    """An idempotency record, outcomes, an event and an outbound record, as goalhub writes them."""
    client = create_app().test_client()
    token = mint_token(STREAMER)
    answer = client.post("/sessions", json={}, headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"})
    assert answer.status_code == 201
    gid = str(ObjectId())
    arguments = {"goal_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {}, "context": {},
                 "levels": [{"target": 1}], "nbf": None, "exp": None}
    dispatch.deliver("goal.created", arguments)
    return gid


def counts(db) -> dict[str, int]:
    return {name: db[name].count_documents({}) for name in (*retention.COLLECTIONS, "sessions")}


def test_every_written_record_carries_stored_at_and_expires_on_the_embedded_store(db, inline_plugin, drain):
    inline_plugin(Quiet(), "quiet")
    write_one_of_each(db)
    drain()
    before = counts(db)
    assert all(before[name] >= 1 for name in before), before
    for name in retention.COLLECTIONS:
        assert all("stored_at" in doc for doc in db[name].find()), name

    assert retention.purge(db) == dict.fromkeys(retention.COLLECTIONS, 0)  # nothing is old yet
    later = time.time() + MONTH
    assert retention.purge(db, now=later, dry_run=True)["outcomes"] == before["outcomes"]
    assert counts(db) == before  # a dry run deletes nothing
    deleted = retention.purge(db, now=later)
    assert deleted == {name: before[name] for name in retention.COLLECTIONS}
    after = counts(db)
    assert after == {**dict.fromkeys(retention.COLLECTIONS, 0), "sessions": before["sessions"]}  # sessions stay


def test_idempotency_records_live_a_day_the_rest_a_month(db, monkeypatch):
    write_one_of_each(db)
    two_days = time.time() + 2 * 86400
    assert retention.purge(db, now=two_days) == {"requests": 1, "outcomes": 0, "events": 0, "outbound": 0}
    monkeypatch.setenv("GOALHUB_RETENTION_OUTCOMES", "0")  # 0: kept for ever
    assert retention.purge(db, now=time.time() + MONTH)["outcomes"] == 0
    assert retention.expires_in("outcomes") is None and retention.expires_in("events") == timedelta(days=30)


def test_records_written_before_stored_at_expire_by_their_epoch_time(db):
    old = time.time() - MONTH
    db.outcomes.insert_one({"_id": "legacy", "goal_id": "g", "status": "ok", "queued_at": old})
    db.events.insert_one({"_id": "legacy", "goal_id": "g", "delivered_at": old})
    db.outbound.insert_one({"_id": "legacy", "kind": "k", "created_at": time.time()})
    assert retention.purge(db) == {"requests": 0, "outcomes": 1, "events": 1, "outbound": 0}


@pytest.mark.parametrize(("read", "writes"), [(50_000, 3), (4, 4)])
def test_a_purge_deletes_in_batches_and_keeps_a_record_written_again_meanwhile(db, monkeypatch, read, writes):
    """retention.purge deletes PURGE_BATCH records per write, so the embedded store's writers
    wait for one batch, not the whole purge; a record stamped again between a batch's read and
    its delete (an outcome updated meanwhile) is not deleted."""
    old = retention.stamp()["stored_at"] - timedelta(seconds=2 * MONTH)
    db.outcomes.insert_many([{"_id": f"o{i}", "goal_id": "g", "status": "ok", "stored_at": old} for i in range(8)])
    db.outcomes.insert_one({"_id": "fresh", "goal_id": "g", "status": "ok", **retention.stamp()})
    monkeypatch.setattr(retention, "PURGE_BATCH", 3)
    monkeypatch.setattr(retention, "PURGE_READ", read)
    deletes = []
    real = type(db.outcomes).delete_many

    def delete_many(collection, flt, **options):
        if collection.name == "outcomes":
            deletes.append(flt)
            if len(deletes) == 1:  # written again after the first batch was read
                collection.update_one({"_id": "o0"}, {"$set": retention.stamp()})
        return real(collection, flt, **options)

    monkeypatch.setattr(type(db.outcomes), "delete_many", delete_many)
    assert retention.purge(db)["outcomes"] == 7
    assert len(deletes) == writes and all(len(flt["$and"][0]["_id"]["$in"]) <= 3 for flt in deletes)
    assert sorted(doc["_id"] for doc in db.outcomes.find()) == ["fresh", "o0"]


def test_goalhub_purge_deletes_expired_records(db, monkeypatch):
    write_one_of_each(db)
    monkeypatch.setenv("GOALHUB_RETENTION_REQUESTS", "1")
    time.sleep(1.2)
    result = CliRunner().invoke(main, ["purge", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deleted"] == {"requests": 1, "outcomes": 0, "events": 0, "outbound": 0}
    assert db.requests.count_documents({}) == 0


def test_the_scheduler_process_purges_the_embedded_store_by_itself(db, tmp_path):
    write_one_of_each(db)
    import os

    env = {**os.environ, "GOALHUB_RETENTION_REQUESTS": "1", "GOALHUB_RETENTION_EVENTS": "1",
           "GOALHUB_PURGE_INTERVAL": "0.5"}
    scheduler = ChildProcess("scheduler", "from goalhub.scheduler import run_scheduler; run_scheduler()", env, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while db.requests.count_documents({}) or db.events.count_documents({}):
            assert time.monotonic() < deadline, scheduler.output()
            time.sleep(0.2)
    finally:
        scheduler.stop()
    assert db.outcomes.count_documents({}) >= 1  # a month's lifetime: still there


def test_the_scheduler_polls_on_while_a_purge_runs_in_its_own_thread(db, monkeypatch):
    """purge_when_due starts the purge in a thread and returns at once: a purge of a big store
    (SQLite reading every index entry above the bound) does not hold up the scheduler's loop,
    and so the activations. A purge still running is not started twice."""
    import threading

    monkeypatch.setattr(retention, "_last_purge", {})
    started, release = threading.Event(), threading.Event()
    real = retention.purge

    def slow(database, *args, **kwargs):
        started.set()
        assert release.wait(10)
        return real(database, *args, **kwargs)

    monkeypatch.setattr(retention, "purge", slow)
    thread = retention.purge_when_due(db, interval=0)
    assert thread is not None and started.wait(5) and thread.is_alive()  # the caller is back, the purge runs
    assert retention.purge_when_due(db, interval=0) is None  # not a second one meanwhile
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    assert retention.purge_when_due(db, interval=3600) is None  # not due yet
    again = retention.purge_when_due(db, interval=0)
    assert again is not None
    again.join(10)


def test_mongomock_expires_records_by_their_ttl_index(monkeypatch, inline_plugin, drain):
    import mongomock

    monkeypatch.setenv("GOALHUB_MONGO_URI", "mongomock://")
    monkeypatch.setenv("GOALHUB_RETENTION_REQUESTS", "60")
    store.reset()
    db = store.get_database()
    indexes = db.outbound.index_information()
    assert indexes[retention.INDEX]["expireAfterSeconds"] == 30 * 86400
    assert db.requests.index_information()[retention.INDEX]["expireAfterSeconds"] == 60
    inline_plugin(Quiet(), "quiet")
    write_one_of_each(db)
    drain()
    assert all(db[name].count_documents({}) >= 1 for name in retention.COLLECTIONS)
    # mongomock's TTL monitor compares with mongomock.utcnow(), as MongoDB's with its clock.
    real_now = mongomock.utcnow
    monkeypatch.setattr(mongomock, "utcnow", lambda: real_now() + timedelta(seconds=61))
    assert db.requests.count_documents({}) == 0 and db.outcomes.count_documents({}) >= 1
    monkeypatch.setattr(mongomock, "utcnow", lambda: real_now() + timedelta(days=31))
    assert {name: db[name].count_documents({}) for name in retention.COLLECTIONS} == dict.fromkeys(
        retention.COLLECTIONS, 0)
    assert db.sessions.count_documents({}) == 1


def test_a_changed_lifetime_is_applied_to_an_existing_ttl_index(monkeypatch):
    monkeypatch.setenv("GOALHUB_MONGO_URI", "mongomock://")
    store.reset()
    db = store.get_database()
    monkeypatch.setenv("GOALHUB_RETENTION_OUTBOUND", "120")
    retention.ensure_indexes(db)
    assert db.outbound.index_information()[retention.INDEX]["expireAfterSeconds"] == 120
