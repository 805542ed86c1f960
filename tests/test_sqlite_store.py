"""Embedded-store-only guarantees: persistence, cross-process atomicity, fork safety, index use."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mongomock
import pytest
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from goalhub.sqlite_store import WRITES, Collection, SQLiteClient

PROCS = 3


def _inc_worker(target: str | Collection, start: multiprocessing.synchronize.Event, times: int) -> None:
    # A path (spawn: nothing is inherited) or the parent's own Collection (fork: inherited connection).
    coll = SQLiteClient(target).goalhub.counters if isinstance(target, str) else target
    start.wait(10)
    for _ in range(times):
        coll.update_one({"_id": "c"}, {"$inc": {"n": 1}})


def _queued_inc_worker(path: str, start: multiprocessing.synchronize.Event, times: int) -> None:
    client = SQLiteClient(path)
    client.queue_writers = True  # as a pool worker's (goalhub.store.tune_for_jobs)
    start.wait(10)
    for _ in range(times):
        client.goalhub.counters.update_one({"_id": "c"}, {"$inc": {"n": 1}})


def _bulk_inc_worker(path: str, start: multiprocessing.synchronize.Event, times: int) -> None:
    import pymongo

    coll = SQLiteClient(path).goalhub.counters
    start.wait(10)
    for _ in range(times):  # each update computed before the lock, written only if its document is unchanged
        coll.bulk_write([pymongo.UpdateOne({"_id": i}, {"$inc": {"n": 1}}) for i in range(5)], ordered=False)


def _claim_worker(path: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    coll = SQLiteClient(path).goalhub.jobs
    start.wait(10)
    mine = []
    for i in range(100):
        if coll.find_one_and_update({"_id": i, "claimed": {"$exists": False}},
                                    {"$set": {"claimed": os.getpid()}}) is not None:
            mine.append(i)
    out.put((os.getpid(), mine))


def _run(method: str, target: Callable[..., None], args: tuple) -> None:
    """Start PROCS workers together (the Event) and wait for each to exit cleanly."""
    ctx = multiprocessing.get_context(method)
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(args[0], start, *args[1:])) for _ in range(PROCS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0


def test_persists_across_clients(tmp_path: Path) -> None:
    with SQLiteClient(tmp_path) as client:
        client.goalhub.goals.insert_one({"_id": "g", "when": dt.datetime(2024, 1, 2, 3, 4, 5)})
        client.goalhub.goals.create_index("slug", unique=True)
    client = SQLiteClient(tmp_path)
    assert client.goalhub.goals.find_one("g") == {"_id": "g", "when": dt.datetime(2024, 1, 2, 3, 4, 5)}
    assert "slug_1" in client.goalhub.goals.index_information()
    assert client.goalhub.list_collection_names() == ["goals"]
    assert client["goalhub"].command("ping") == {"ok": 1.0}


def test_file_path_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "store.db"
    SQLiteClient(path).goalhub.goals.insert_one({"x": 1})
    assert path.exists()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_concurrent_inc_loses_nothing(tmp_path: Path, method: str) -> None:
    coll = SQLiteClient(tmp_path).goalhub.counters
    coll.insert_one({"_id": "c", "n": 0})
    target = coll if method == "fork" else str(tmp_path)
    _run(method, _inc_worker, (target, 300))
    assert coll.find_one("c")["n"] == PROCS * 300


def test_concurrent_bulk_writes_lose_nothing(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.counters
    coll.insert_many([{"_id": i, "n": 0} for i in range(5)])
    _run("fork", _bulk_inc_worker, (str(tmp_path), 200))
    assert [d["n"] for d in coll.find(sort=[("_id", 1)])] == [PROCS * 200] * 5


def test_concurrent_claims_are_exclusive(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.jobs
    coll.insert_many([{"_id": i} for i in range(100)])
    out = multiprocessing.get_context("fork").Queue()
    _run("fork", _claim_worker, (str(tmp_path), out))  # results are tiny: safe to read after join
    claims = dict(out.get(timeout=10) for _ in range(PROCS))
    claimed = [i for ids in claims.values() for i in ids]
    assert sorted(claimed) == list(range(100))  # every doc claimed, none twice
    for pid, ids in claims.items():
        assert coll.count_documents({"claimed": pid}) == len(ids)


def test_fork_after_opening(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.goals
    coll.insert_one({"_id": "g", "n": 0})  # parent has an open connection now
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=lambda: coll.update_one({"_id": "g"}, {"$inc": {"n": 1}}))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    coll.update_one({"_id": "g"}, {"$inc": {"n": 1}})
    assert coll.find_one("g")["n"] == 2


def test_threads_share_a_client(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.counters
    coll.insert_one({"_id": "c", "n": 0})
    threads = [threading.Thread(target=lambda: [coll.update_one({"_id": "c"}, {"$inc": {"n": 1}})
                                                for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert coll.find_one("c")["n"] == 200


def test_lookups_use_indexes(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.goals
    coll.insert_many([{"_id": i, "slug": f"s{i}", "owner": i % 50, "plain": i} for i in range(5000)])
    coll.create_index("slug", unique=True)
    coll.create_index([("owner", 1), ("slug", 1)])

    def examined(flt: dict) -> int:
        coll.docs_examined = 0
        list(coll.find(flt))
        return coll.docs_examined

    assert examined({"_id": 4321}) == 1
    assert examined({"_id": {"$in": [1, 2, 3]}}) == 3
    assert examined({"slug": "s4321"}) == 1
    assert examined({"slug": {"$eq": "s7"}, "plain": {"$gt": 0}}) == 1
    assert examined({"$and": [{"slug": {"$in": ["s1", "s2"]}}, {"plain": 1}]}) == 2
    assert examined({"owner": 7}) == 100  # compound index, by its first field
    assert examined({"slug": "missing"}) == 0
    assert examined({"slug": {"$in": []}}) == 0
    assert examined({"plain": 4321}) == 5000  # not indexed: a scan is allowed
    coll.docs_examined = 0
    coll.find_one_and_update({"slug": "s9"}, {"$set": {"slug": "renamed"}})
    assert coll.find_one({"slug": "renamed"})["_id"] == 9 and coll.docs_examined == 2
    assert coll.find_one({"slug": "s9"}) is None


def test_aware_datetimes_match_like_bson(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.goals
    when = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    coll.insert_one({"_id": "g", "when": when})
    assert coll.find_one("g")["when"] == dt.datetime(2024, 1, 1, 10, 0)  # naive UTC, like pymongo
    assert coll.find_one({"when": {"$lt": when + dt.timedelta(seconds=1)}})["_id"] == "g"
    coll.create_index("when")
    assert coll.find_one({"when": when})["_id"] == "g"


def test_sparse_and_partial_unique_indexes(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.goals
    coll.create_index("email", unique=True, sparse=True)
    coll.create_index("run", unique=True, partialFilterExpression={"active": True})
    coll.insert_many([{"n": 1}, {"n": 2}, {"run": "r", "active": False}, {"run": "r", "active": True}])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"run": "r", "active": True})
    assert coll.count_documents({"run": "r"}) == 2
    assert coll.find_one_and_update({"n": 1}, {"$set": {"email": "e"}}, return_document=ReturnDocument.AFTER)
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"n": 2}, {"$set": {"email": "e"}})


def test_finished_threads_release_their_connections(tmp_path: Path) -> None:
    client = SQLiteClient(tmp_path)
    for _ in range(20):  # a thread-per-request server must not leak one connection per request
        t = threading.Thread(target=lambda: client.goalhub.goals.find_one())
        t.start()
        t.join()
    client.goalhub.goals.find_one()
    assert len(client._conns) <= 2


def test_multikey_unique_index(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.goals  # mongomock does not enforce this; MongoDB does
    coll.create_index("tags", unique=True)
    coll.insert_many([{"tags": ["a", "b"]}, {"tags": ["c"]}, {"tags": []}])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"tags": ["z", "b"]})
    assert coll.find_one({"tags": "b"})["tags"] == ["a", "b"]


def test_explain_shows_index_use(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.goals
    coll.insert_one({"slug": "s", "plain": 1})
    coll.create_index("slug")
    many = {"slug": {"$in": [*(f"s{i}" for i in range(600)), "s"]}}  # more values than SQLite's 500 UNION terms
    for flt in ({"_id": 1}, {"_id": {"$in": [1, 2]}}, {"slug": "s"}, {"slug": {"$in": ["s", "t"]}}, many):
        plan = " | ".join(coll.explain(flt))
        assert "docs_cid" not in plan and "SCAN docs" not in plan and "SCAN i" not in plan, (flt, plan)
    assert coll.find_one(many)["slug"] == "s"
    assert "docs_cid" in " | ".join(coll.explain({"plain": 1}))  # the collection scan


# --- the fast paths agree with mongomock, or step aside -----------------------------------------

FAST_UPDATES = [
    ({"_id": 1, "a": {"b": 1, "c": 2}}, {"$set": {"a.b": 5}}),
    ({"_id": 1}, {"$set": {"pairs.t1.trigger": "g1", "pairs.t1.goal": "g2"}}),
    ({"_id": 1, "pairs": {"t0": {"goal": "x"}}}, {"$set": {"pairs.t1.trigger": "g1"}}),
    ({"_id": 1, "a": {"b": {"c": 1}}}, {"$unset": {"a.b.c": ""}}),
    ({"_id": 1}, {"$unset": {"a.b": ""}}),
    ({"_id": 1, "n": {"k": 2}}, {"$inc": {"n.k": 3, "n.new": 1, "m.x": 2}}),
    ({"_id": 1, "a": {"b": [1, 2]}}, {"$set": {"a.b": {"list": [3]}}}),
    ({"_id": 1, "ctx": {"type": "t"}}, {"$set": {"ctx.exclusive_goal_id": "g"}, "$unset": {"gone": ""}}),
    ({"_id": 1, "status": "running", "n": 1}, {"$set": {"status": "ok", "result": [1, {"a": 2}], "error": None},
                                               "$inc": {"n": 1}, "$unset": {"gone": ""}}),
    # The ledger's entry (goalhub.ledger): a string added to a top-level array once.
    ({"_id": 1, "done": ["goal.created|a.x"]}, {"$addToSet": {"done": "goal.created|b.y"}}),
    ({"_id": 1, "done": ["goal.created|a.x"]}, {"$addToSet": {"done": "goal.created|a.x"}}),
    ({"_id": 1}, {"$addToSet": {"done": "goal.created|a.x"}}),
    ({"_id": 1, "done": [1, None, {"a": "x"}, ["x"]]}, {"$addToSet": {"done": "x"}}),
    ({"_id": 1, "done": []}, {"$addToSet": {"done": ""}}),
]
MONGOMOCK_ONLY = [
    ({"_id": 1, "a": None}, {"$set": {"a.b": 1}}),  # through a null: Mongo's error
    ({"_id": 1, "a": "text"}, {"$set": {"a.b": 1}}),  # through a non-document
    ({"_id": 1, "a": [{"b": 1}]}, {"$set": {"a.0.b": 2}}),  # an array index
    ({"_id": 1}, {"$set": {"a": 1, "a.b": 2}}),  # paths that overlap
    ({"_id": 1}, {"$set": {"x": 1}, "$unset": {"x": ""}}),
    ({"_id": 1, "x": 1}, {"$set": {"x": 1}, "$inc": {"x": 1}}),  # one top-level name twice
    ({"_id": 1}, {"$set": {"$x": 1}}),
    ({"_id": 1}, {"$set": {"_id.x": 1}}),
    ({"_id": 1}, {"$push": {"a": 1}}),
    ({"_id": 1, "a": "text"}, {"$addToSet": {"a": "x"}}),  # not an array: Mongo's error
    ({"_id": 1, "a": [1]}, {"$addToSet": {"a": 1}}),  # a number (1 and 1.0 are one value in BSON)
    ({"_id": 1, "a": []}, {"$addToSet": {"a": {"$each": ["x", "y"]}}}),
    ({"_id": 1, "a": {"b": []}}, {"$addToSet": {"a.b": "x"}}),
    ({"_id": 1}, {"$addToSet": {"a": "x", "b": "y"}}),
    ({"_id": 1}, {"$addToSet": {"a": "x"}, "$set": {"b": 1}}),
]


def _by_mongomock(doc: dict, update: dict) -> object:
    import mongomock

    scratch = mongomock.MongoClient()["t"]["docs"]
    scratch.insert_one(dict(doc))
    try:
        scratch.update_one({"_id": doc["_id"]}, update)
    except Exception as exc:  # noqa: BLE001 (the error is the answer)
        return type(exc)
    return scratch.find_one()


@pytest.mark.parametrize(("doc", "update"), FAST_UPDATES)
def test_the_fast_update_path_gives_mongomocks_answer_and_leaves_the_old_document(doc, update):
    import copy

    from goalhub.sqlite_store import _apply_simple

    before = copy.deepcopy(doc)
    fast = _apply_simple(doc, update)
    assert fast is not None
    assert fast == _by_mongomock(doc, update)
    assert doc == before  # the stored row's document is not changed in place


UPSERTS = [{"$addToSet": {"done": "goal.created|r"}}, {"$set": {"a.b": 1, "c": [1]}}, {"$inc": {"n": 2}},
           {"$unset": {"a": ""}}]
UPSERTS_BY_MONGOMOCK = [{"$addToSet": {"a": {"$each": ["x", "y", "x"]}}}, {"$addToSet": {"a": "x"}, "$set": {"b": 1}},
                        {"$setOnInsert": {"version": 2}}]


@pytest.mark.parametrize("update", UPSERTS + UPSERTS_BY_MONGOMOCK)
@pytest.mark.parametrize("key", [7, "g1", "6800a9073e0c346531958b03"])
def test_an_upsert_by_id_alone_gives_mongomocks_answer(update, key, monkeypatch):
    """The ledger's first entry of a goal is an upsert by ``_id``: built from that ``_id`` by the
    fast path when it knows the update, not through mongomock (which the test then takes away);
    else by mongomock, as before."""
    import mongomock

    from goalhub import sqlite_store

    reference = mongomock.MongoClient()["t"]["docs"]
    reference.update_one({"_id": key}, update, upsert=True)
    if update in UPSERTS:
        monkeypatch.setattr(sqlite_store, "_scratch", lambda: pytest.fail("took mongomock's path"))
    assert sqlite_store._apply(None, {"_id": key}, update, False) == reference.find_one()


def test_a_set_value_is_the_stored_documents_own_not_the_callers():
    from goalhub.sqlite_store import _apply_simple

    given = [1, {"a": 2}]
    fast = _apply_simple({"_id": 1}, {"$set": {"list": given}})
    given[1]["a"] = 3
    assert fast == {"_id": 1, "list": [1, {"a": 2}]}


@pytest.mark.parametrize(("doc", "update"), MONGOMOCK_ONLY)
def test_updates_the_fast_path_does_not_know_go_to_mongomock(doc, update):
    from goalhub.sqlite_store import _apply_simple

    assert _apply_simple(doc, update) is None


@pytest.mark.parametrize("projection", [{"a": 1}, {"a": True, "_id": 0}, ["a", "c"], {"_id": 1, "c": 1.0},
                                        {"missing": 1}])
def test_the_fast_projection_gives_mongomocks_answer(projection):
    import mongomock

    from goalhub.sqlite_store import _project_simple

    doc = {"_id": 1, "a": {"x": 1}, "b": 2, "c": [3]}
    scratch = mongomock.MongoClient()["t"]["docs"]
    scratch.insert_one(dict(doc))
    assert _project_simple(doc, projection) == scratch.find_one({}, projection)


@pytest.mark.parametrize("projection", [{"a": 0}, {"a.x": 1}, {"a": {"$slice": 1}}, {"_id": "yes"}])
def test_projections_the_fast_path_does_not_know_go_to_mongomock(projection):
    from goalhub.sqlite_store import _project_simple

    assert _project_simple({"_id": 1, "a": [1, 2]}, projection) is None


def test_an_update_moves_the_index_entries_of_what_it_changed_and_only_those(tmp_path: Path) -> None:
    with SQLiteClient(tmp_path) as client:
        outcomes = client.goalhub.outcomes
        for field in ("goal_id", "status", "meta.kind"):
            outcomes.create_index(field)
        outcomes.create_index("status", name="ok_only", partialFilterExpression={"goal_id": "g1"})
        outcomes.insert_one({"_id": "o1", "goal_id": "g1", "status": "running", "meta": {"kind": "a"}})
        outcomes.update_one({"_id": "o1"}, {"$set": {"status": "ok", "meta.kind": "b"}})
        assert [o["_id"] for o in outcomes.find({"status": "ok"})] == ["o1"]
        assert list(outcomes.find({"status": "running"})) == []
        assert [o["_id"] for o in outcomes.find({"meta.kind": "b"})] == ["o1"]
        assert list(outcomes.find({"meta.kind": "a"})) == [] and [o["_id"] for o in outcomes.find({"goal_id": "g1"})] == ["o1"]
        conn = client._conn()
        keys = sorted((name, key) for name, key in conn.execute("SELECT iname, key FROM idx"))
        assert len(keys) == 4 and len({name for name, _ in keys}) == 4  # one entry per index, none stale



def _entries(client: SQLiteClient) -> list[tuple[str, bytes, int]]:
    return sorted(client._conn().execute("SELECT iname, key, rid FROM idx"))


@pytest.mark.parametrize("delete", ["delete_one", "delete_many", "find_one_and_delete"])
def test_a_delete_takes_every_index_entry_of_what_it_deletes_and_only_those(tmp_path: Path, delete: str) -> None:
    with SQLiteClient(tmp_path) as client:
        docs = client.goalhub.docs
        docs.create_index([("goal_id", 1), ("status", -1)])  # compound
        docs.create_index("tags")  # multikey: an entry per element
        docs.create_index("code", unique=True, sparse=True)
        docs.create_index("status", name="open_only", partialFilterExpression={"open": True})
        docs.create_index("at")
        kept = {"_id": "kept", "goal_id": "g2", "status": "ok", "tags": ["x", "y"], "code": 2, "open": True,
                "at": dt.datetime(2026, 1, 1)}
        docs.insert_one(kept)
        alone = _entries(client)
        docs.insert_one({"_id": "gone", "goal_id": "g1", "status": "running", "tags": ["a", "b", ["c"]], "code": 1,
                         "open": True, "at": dt.datetime(2026, 1, 2)})
        assert len(_entries(client)) > len(alone)
        getattr(docs, delete)({"_id": "gone"})
        assert _entries(client) == alone  # every entry of the deleted one, none of the other's
        # Its rowid is the store's highest: SQLite gives it to the next document. No entry of the
        # deleted one answers for it, nor holds its unique key.
        docs.insert_one({"_id": "new", "goal_id": "g3", "code": 1})
        assert docs.find_one({"tags": "a"}) is None and [d["_id"] for d in docs.find({"code": 1})] == ["new"]
        docs.delete_many({})
        assert _entries(client) == []



def test_a_delete_planned_before_the_lock_is_done_again_under_it_when_the_document_changed_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteClient(tmp_path) as client, SQLiteClient(tmp_path) as other:
        docs = client.goalhub.docs
        docs.create_index("status")
        docs.insert_many([{"_id": "a", "status": "x"}, {"_id": "b", "status": "x"}])
        select, calls = docs._select, [0]

        def racing(*args, **kwargs):  # type: ignore[no-untyped-def]
            rows = select(*args, **kwargs)
            calls[0] += 1
            if calls[0] == 1:  # after the plan read "a", before the lock: another process moves it
                other.goalhub.docs.update_one({"_id": "a"}, {"$set": {"status": "y"}})
            return rows

        monkeypatch.setattr(docs, "_select", racing)
        assert docs.delete_one({"status": "x"}).deleted_count == 1
        assert calls[0] == 2  # the plan, then everything again under the lock
        assert [d["_id"] for d in docs.find({})] == ["a"] and docs.find_one({"status": "y"})["_id"] == "a"
        assert [(name, rid) for name, _, rid in _entries(client)] == [("status_1", 1)]  # a's, moved; none of b's
        monkeypatch.undo()
        assert docs.delete_one({"status": "nothing"}).deleted_count == 0
        assert docs.delete_one({"status": "y"}).deleted_count == 1 and _entries(client) == []


def _make_rid_index(path: Path) -> None:
    """What a process of a release before 2026-12-04 does to a store without the index."""
    conn = sqlite3.connect(path / "goalhub.sqlite3")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_rid ON idx (rid)")
    conn.close()


def test_a_store_of_a_release_before_keeps_its_rowid_index_until_it_is_dropped_and_deletes_stay_whole(
        tmp_path: Path) -> None:
    with SQLiteClient(tmp_path) as client:
        assert not client.has_rid_index()  # a new store has none
        client.goalhub.docs.create_index("status")
        client.goalhub.docs.insert_many([{"_id": i, "status": "ok" if i % 2 else "running"} for i in range(10)])
    _make_rid_index(tmp_path)  # as a release before made every store
    with SQLiteClient(tmp_path) as client:
        docs = client.goalhub.docs
        assert client.has_rid_index()  # opening it changes nothing: a process of that release may run
        docs.delete_many({"status": "running"})
        assert [d["_id"] for d in docs.find({"status": "ok"})] == [1, 3, 5, 7, 9] and len(_entries(client)) == 5
        assert client.drop_rid_index() is True and not client.has_rid_index()
        assert client.drop_rid_index() is False
        docs.delete_one({"_id": 1})
        assert [d["_id"] for d in docs.find({"status": "ok"})] == [3, 5, 7, 9] and len(_entries(client)) == 4


ENTRY_VALUES = [None, True, False, 0, 1, 1.0, 2.5, -0.0, "", "ok", "a\x00b\x01", b"raw", [], [1, "a", [2]], (1, 2), {"k": 1},
                dt.datetime(2026, 1, 1, 12, 0, 0, 123456)]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("value", [*ENTRY_VALUES, "<missing>"], ids=repr)
def test_a_one_field_indexs_fast_entries_are_the_general_ones(value, sparse):
    from bson import ObjectId
    from bson.son import SON

    from goalhub.sqlite_store import _Index

    values = (value, ObjectId("6b0ee7082dfc716069df89e6")) if value is None else (value,)
    for value in values:
        given = {} if value == "<missing>" else {"status": value}
        docs = [  # the field at the top, one and two documents down, and on the ways that are not documents
            ("status", {"_id": 1, **given}),
            ("meta.status", {"_id": 1, "meta": given}),
            ("a.meta.status", {"_id": 1, "a": {"meta": given}}),
            ("a.meta.status", {"_id": 1, "a": {}}),
            ("a.meta.status", {"_id": 1, "a": [{"meta": given}, {"meta": {"status": 7}}]}),
            ("a.meta.status", {"_id": 1, "a": "text"}),
            ("a.meta.status", {"_id": 1, "a": None}),
            ("a.meta.status", {"_id": 1, "a": SON([("meta", given)])}),
            ("meta.0", {"_id": 1, "meta": {"0": value}}),
        ]
        for field, doc in docs:
            fast = _Index(f"{field}_1", ((field, 1),), False, sparse, None, {})
            general = _Index(f"{field}_1", ((field, 1),), False, sparse, None, {})
            general.__dict__["_path"] = None  # the path walk through mongomock's iter_key_candidates
            assert fast._path == tuple(field.split("."))
            assert fast.entries(doc) == general.entries(doc), (field, doc)


def test_ids_of_equal_value_find_the_same_document_and_others_do_not(tmp_path: Path) -> None:
    from bson import ObjectId

    oid = ObjectId()
    with SQLiteClient(tmp_path) as client:
        docs = client.goalhub.docs
        docs.insert_many([{"_id": 1, "n": "int"}, {"_id": "1", "n": "str"}, {"_id": oid, "n": "oid"}])
        assert docs.find_one({"_id": 1.0})["n"] == "int"  # 1 == 1.0 in Mongo
        assert docs.find_one({"_id": "1"})["n"] == "str"
        assert docs.find_one({"_id": oid})["n"] == "oid" and docs.find_one({"_id": str(oid)}) is None
        assert docs.find_one({"_id": 2}) is None
        assert docs.update_one({"_id": 1.0}, {"$set": {"n": "one"}}).modified_count == 1
        assert docs.find_one({"_id": 1})["n"] == "one"


def test_an_update_adds_the_new_key_even_where_the_old_entry_is_missing(tmp_path: Path) -> None:
    with SQLiteClient(tmp_path) as client:
        outcomes = client.goalhub.outcomes
        outcomes.create_index("status")
        outcomes.insert_one({"_id": "o1", "status": "running"})
        client._conn().execute("DELETE FROM idx")  # an entry gone astray
        outcomes.update_one({"_id": "o1"}, {"$set": {"status": "ok"}})
        assert [o["_id"] for o in outcomes.find({"status": "ok"})] == ["o1"]
        outcomes.update_one({"_id": "o1"}, {"$set": {"status": "failed"}})  # the usual move: one statement
        assert list(outcomes.find({"status": "ok"})) == []
        assert [o["_id"] for o in outcomes.find({"status": "failed"})] == ["o1"]
        assert client._conn().execute("SELECT COUNT(*) FROM idx").fetchone()[0] == 1


def _meanwhile(monkeypatch: pytest.MonkeyPatch, coll: Collection, change: Callable[[], None]) -> list[int]:
    """Run ``change`` (another client's write) once, right after ``coll`` computed its update from
    what it read and before it takes the write lock; returns how many times it computed."""
    computed = [0]
    diff = coll._diff

    def racing(*args):  # type: ignore[no-untyped-def]
        computed[0] += 1
        if computed[0] == 1:
            change()
        return diff(*args)

    monkeypatch.setattr(coll, "_diff", racing)
    return computed


def test_an_update_computed_before_the_lock_is_done_again_when_the_document_changed_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = SQLiteClient(tmp_path).goalhub.counters
    other = SQLiteClient(tmp_path).goalhub.counters  # another connection, as another process has
    coll.insert_one({"_id": "c", "n": 0, "status": "running"})

    computed = _meanwhile(monkeypatch, coll, lambda: other.update_one({"_id": "c"}, {"$inc": {"n": 5}}))
    assert coll.update_one({"_id": "c"}, {"$inc": {"n": 1}}).modified_count == 1
    assert coll.find_one("c")["n"] == 6 and computed[0] == 2  # from the new document: no update lost

    # A guard that matched when read, and no longer does once the other writer finished.
    _meanwhile(monkeypatch, coll, lambda: other.update_one({"_id": "c"}, {"$set": {"status": "ok"}}))
    result = coll.update_one({"_id": "c", "status": "running"}, {"$set": {"status": "failed"}})
    assert (result.matched_count, result.modified_count) == (0, 0)
    assert coll.find_one("c")["status"] == "ok"


def test_an_index_created_meanwhile_gets_the_updates_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = SQLiteClient(tmp_path).goalhub.goals
    other = SQLiteClient(tmp_path).goalhub.goals
    coll.insert_one({"_id": "g", "slug": "a"})
    _meanwhile(monkeypatch, coll, lambda: other.create_index("slug", unique=True))
    coll.update_one({"_id": "g"}, {"$set": {"slug": "b"}})
    assert [d["_id"] for d in coll.find({"slug": "b"})] == ["g"] and coll.docs_examined >= 1
    with pytest.raises(DuplicateKeyError):  # the unique index knows the new key
        other.insert_one({"_id": "h", "slug": "b"})


def test_an_update_that_changes_nothing_or_matches_nothing_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    coll = SQLiteClient(path).goalhub.goals
    coll.insert_one({"_id": "g", "n": 1})
    probe = sqlite3.connect(path)
    version = probe.execute("PRAGMA data_version").fetchone()[0]
    assert coll.update_one({"_id": "g"}, {"$set": {"n": 1}}).raw_result == {"n": 1, "nModified": 0, "ok": 1.0}
    assert coll.update_one({"_id": "x"}, {"$set": {"n": 2}}).raw_result == {"n": 0, "nModified": 0, "ok": 1.0}
    assert probe.execute("PRAGMA data_version").fetchone()[0] == version  # no other connection committed
    coll.update_one({"_id": "g"}, {"$set": {"n": 2}})
    assert probe.execute("PRAGMA data_version").fetchone()[0] != version


def test_checkpoint_copies_the_wal_back_and_autocheckpoint_applies_to_new_connections(tmp_path: Path) -> None:
    client = SQLiteClient(tmp_path)
    client.goalhub.goals.insert_many([{"n": i} for i in range(50)])
    assert client._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # SQLite's own
    frames, copied = client.checkpoint()
    assert frames > 0 and copied == frames
    client.autocheckpoint = 10_000
    client.close()  # the next connection is opened with it
    assert client._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10_000
    assert client.goalhub.goals.count_documents({}) == 50


def test_writers_that_queue_on_the_writers_file_lose_nothing(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.counters
    coll.insert_one({"_id": "c", "n": 0})  # this writer does not queue: both kinds share the store
    _run("fork", _queued_inc_worker, (str(tmp_path), 300))
    assert coll.find_one("c")["n"] == PROCS * 300


def test_a_queued_writer_waits_for_the_file_is_woken_when_it_is_let_go_and_an_alarm_stops_its_wait(
        tmp_path: Path) -> None:
    client = SQLiteClient(tmp_path)
    client.goalhub.counters.insert_one({"_id": "c", "n": 0})
    client.queue_writers = True
    holder = os.open(tmp_path / "goalhub.sqlite3.writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another writer's turn, as another process would hold it

    def alarm(signum, frame):  # type: ignore[no-untyped-def]
        raise TimeoutError("the job's timeout")  # RQ's death penalty raises from SIGALRM so

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.goalhub.counters.update_one({"_id": "c"}, {"$inc": {"n": 1}})
        assert 0.25 < time.monotonic() - started < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert client.goalhub.counters.find_one("c")["n"] == 0  # stopped before it wrote anything

    threading.Timer(0.2, fcntl.flock, (holder, fcntl.LOCK_UN)).start()
    started = time.monotonic()
    client.goalhub.counters.update_one({"_id": "c"}, {"$inc": {"n": 1}})
    assert 0.15 < time.monotonic() - started < 5 and client.goalhub.counters.find_one("c")["n"] == 1
    os.close(holder)
    client.close()
    assert not client._queue_fds  # its descriptors close with its connections



def test_a_queued_writer_asks_for_its_turn_without_sleeping_before_it_sleeps_on_it(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from goalhub import sqlite_store

    path = tmp_path / "store.writers"
    mine, holder = os.open(path, os.O_RDWR | os.O_CREAT), os.open(path, os.O_RDWR)
    flock, calls = fcntl.flock, []

    def recording(fd: int, operation: int) -> None:
        calls.append(operation)
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", recording)
    sqlite_store._take_turn(mine, time.perf_counter())  # free: taken at the first ask
    assert calls == [fcntl.LOCK_EX | fcntl.LOCK_NB]
    flock(mine, fcntl.LOCK_UN)
    flock(holder, fcntl.LOCK_EX)  # another writer's turn, for 0.2 s
    threading.Timer(0.2, flock, (holder, fcntl.LOCK_UN)).start()
    calls.clear()
    started = time.perf_counter()
    sqlite_store._take_turn(mine, started)
    assert 0.15 < time.perf_counter() - started < 5
    # Asked again without sleeping (for QUEUE_SPIN), then slept on the file until it was let go.
    assert len(calls) >= 2 and set(calls[:-1]) == {fcntl.LOCK_EX | fcntl.LOCK_NB} and calls[-1] == fcntl.LOCK_EX
    os.close(mine)
    os.close(holder)


def test_a_queued_writer_stopped_right_after_it_took_its_turn_lets_the_file_go(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    client = SQLiteClient(tmp_path)
    client.queue_writers = True
    client.goalhub.counters.insert_one({"_id": "c", "n": 0})
    flock = fcntl.flock

    def taken_then_stopped(fd: int, operation: int) -> None:
        flock(fd, operation)
        if operation & fcntl.LOCK_EX:
            raise TimeoutError("the job's timeout, landing as the turn is taken")

    monkeypatch.setattr(fcntl, "flock", taken_then_stopped)
    with pytest.raises(TimeoutError):
        client.goalhub.counters.update_one({"_id": "c"}, {"$inc": {"n": 1}})
    monkeypatch.setattr(fcntl, "flock", flock)
    other = os.open(tmp_path / "goalhub.sqlite3.writers", os.O_RDWR)
    flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: another writer takes its turn at once
    os.close(other)
    assert client.goalhub.counters.find_one("c")["n"] == 0
    client.close()


# --- what write transactions wait for the write lock and hold it (goalhub_store_write_*) --------

@pytest.mark.parametrize("queued", [False, True], ids=["busy-handler", "writers-file"])
def test_each_write_transaction_counts_what_it_waited_for_the_lock_and_held_it(tmp_path: Path, queued: bool) -> None:
    client = SQLiteClient(tmp_path)
    client.queue_writers = queued
    coll = client.goalhub.counters
    coll.insert_one({"_id": "c", "n": 0})
    WRITES.take()
    other = threading.Thread(target=lambda: coll.update_one({"_id": "c"}, {"$inc": {"n": 1}}))
    with client._write():  # a writer that holds the lock for 0.3 s; the other thread waits its turn
        other.start()
        time.sleep(0.3)
    other.join(10)
    count, waited, held = WRITES.take()
    assert count == 2 and coll.find_one("c")["n"] == 1
    assert 0.25 < waited < 5  # the other's: asked while this one held it
    assert 0.3 <= held < 5  # both: this one's 0.3 s, and the other's
    assert WRITES.take() == (0, 0.0, 0.0)  # taken: counted once


def test_a_batch_is_one_transaction_and_a_failed_one_counts_the_time_it_held_the_lock(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.counters
    coll.insert_many([{"_id": i, "n": 0} for i in range(3)])
    WRITES.take()
    coll.bulk_write([UpdateOne({"_id": i}, {"$inc": {"n": 1}}) for i in range(3)])  # savepoints inside
    assert WRITES.take()[0] == 1
    with pytest.raises(RuntimeError), coll.database.client._write() as conn:
        conn.execute("UPDATE docs SET data = data")
        time.sleep(0.1)
        raise RuntimeError("undone")
    count, _, held = WRITES.take()
    assert count == 1 and held >= 0.1


def test_a_forked_child_reports_only_its_own_writes(tmp_path: Path) -> None:
    coll = SQLiteClient(tmp_path).goalhub.counters
    WRITES.take()
    coll.insert_one({"_id": "parent"})  # not taken yet when the child is forked
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            before = WRITES.take()
            coll.insert_one({"_id": "child"})
            os.write(write, json.dumps([before, WRITES.take()[0]]).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    before, after = json.loads(os.read(read, 200))
    os.close(read)
    assert before == [0, 0.0, 0.0] and after == 1
    assert WRITES.take()[0] == 1  # the parent's own insert, still its own to report


# --- datetime upper bounds, $exists: false and $or through the index (retention's purge) --------

_T = dt.datetime(2026, 12, 4, 12, 0, 0, 250000)
_TIMES = [None, _T, _T - dt.timedelta(milliseconds=1), _T + dt.timedelta(milliseconds=1),
          _T.replace(microsecond=250400), dt.datetime(1969, 7, 20), dt.datetime(1970, 1, 1), dt.datetime(1990, 5, 1),
          dt.datetime(2001, 9, 9, 1, 46, 39), dt.datetime(2001, 9, 9, 1, 46, 41), dt.datetime(2300, 1, 1),
          dt.datetime(2026, 12, 4, 13, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2026-01-01", 7, 1.5e12,
          dt.datetime(1970, 1, 1, 0, 0, 2), [dt.datetime(1999, 1, 1), dt.datetime(2100, 1, 1)], [], {"at": _T}]
_2001 = dt.datetime(2001, 9, 9, 1, 46, 40)  # 10**12 ms: the first time of 13 digits
_BOUNDED = [
    {"t": {"$lt": _T}}, {"t": {"$lte": _T}}, {"t": {"$lt": _T.replace(microsecond=250400)}},
    {"t": {"$lt": dt.datetime(2001, 9, 9, 1, 46, 40)}}, {"t": {"$lte": dt.datetime(1990, 5, 1)}},
    {"t": {"$lt": dt.datetime(2400, 1, 1)}}, {"t": {"$lt": _T, "$lte": dt.datetime(1995, 1, 1)}},
    {"t": {"$lt": dt.datetime(1960, 1, 1)}},  # before 1970: a scan
    # A lower bound does not narrow an upper one's candidates: an array matches when one element
    # is above the lower bound and another, maybe of fewer digits, below the upper one.
    {"t": {"$gte": _2001, "$lt": _T}}, {"t": {"$gt": _2001, "$lte": _T}},
    {"t": {"$gte": dt.datetime(1990, 1, 1), "$lt": _T}}, {"t": {"$gt": _2001, "$lt": dt.datetime(2300, 1, 1)}},
    {"t": {"$exists": False}}, {"t": {"$exists": False}, "n": {"$lt": 9}},
    {"$or": [{"t": {"$lt": _T}}, {"t": {"$exists": False}, "n": {"$lt": 9}}]},  # retention.purge's shape
    {"$or": [{"t": {"$lt": _T}}, {"n": 3}]},  # one branch without an index: a scan
    {"$or": [{"_id": 2}, {"t": {"$lte": dt.datetime(1990, 5, 1)}}]},
]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("compound", [False, True])
def test_datetime_bounds_exists_false_and_or_find_what_a_scan_and_mongomock_find(tmp_path, sparse, compound):
    docs = [{"_id": i, "t": t, "n": i, "u": i % 3} for i, t in enumerate(_TIMES)]
    docs += [{"_id": 100 + i, "n": i} for i in range(12)]  # no t at all
    planned = SQLiteClient(tmp_path / "planned").goalhub.records
    planned.create_index([("t", 1), ("u", 1)] if compound else "t", sparse=sparse)
    scanned = SQLiteClient(tmp_path / "scanned").goalhub.records  # no index: every query is a scan
    reference = mongomock.MongoClient().goalhub.records
    for coll in (planned, scanned, reference):
        coll.insert_many([dict(doc) for doc in docs])
    for flt in _BOUNDED:
        ids = sorted(d["_id"] for d in reference.find(flt))
        assert sorted(d["_id"] for d in scanned.find(flt)) == ids, flt
        assert sorted(d["_id"] for d in planned.find(flt)) == ids, flt
        assert planned.count_documents(flt) == len(ids), flt


def test_retentions_purge_query_is_answered_through_its_index(tmp_path):
    from goalhub import retention

    coll = SQLiteClient(tmp_path).goalhub.outcomes
    coll.create_index(retention.FIELD)
    purge = {"$or": [{"stored_at": {"$lt": _T}}, {"stored_at": {"$exists": False}, "queued_at": {"$lt": 1e9}}]}
    for flt in ({"stored_at": {"$lt": _T}}, {"stored_at": {"$exists": False}}, purge):
        plan = " | ".join(coll.explain(flt))
        assert "docs_cid" not in plan and "SCAN docs" not in plan, (flt, plan)
    coll.insert_many([{"stored_at": _T - dt.timedelta(days=d)} for d in range(40)] + [{"queued_at": 5.0}])
    assert coll.delete_many(purge).deleted_count == 40  # all but today's; the one without stored_at



def _transactions(client: SQLiteClient) -> list[str]:
    """The statements that begin a transaction on this thread's connection, from now on."""
    seen: list[str] = []
    client._conn().set_trace_callback(lambda sql: seen.append(sql) if sql.startswith(("BEGIN", "SAVEPOINT")) else None)
    return seen


def test_a_bulk_write_is_one_transaction_per_batch_of_ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pymongo

    from goalhub import sqlite_store

    client = SQLiteClient(tmp_path)
    coll = client["goalhub"].outcomes
    coll.insert_many([{"_id": i, "status": "running"} for i in range(7)])
    seen = _transactions(client)
    coll.bulk_write([pymongo.UpdateOne({"_id": i}, {"$set": {"status": "ok"}}) for i in range(5)], ordered=False)
    assert seen.count("BEGIN IMMEDIATE") == 1 and seen.count("SAVEPOINT write") == 5
    assert [d["status"] for d in coll.find(sort=[("_id", 1)])] == ["ok"] * 5 + ["running"] * 2
    monkeypatch.setattr(sqlite_store, "BULK_OPS", 2)
    seen.clear()
    coll.bulk_write([pymongo.UpdateOne({"_id": i}, {"$set": {"n": i}}) for i in range(5)])
    assert seen.count("BEGIN IMMEDIATE") == 3  # 2 + 2 + 1: the lock is let go between batches
    assert [d.get("n") for d in coll.find(sort=[("_id", 1)])] == [0, 1, 2, 3, 4, None, None]
    client.close()


@pytest.mark.parametrize("ordered", [True, False])
def test_a_failed_op_of_a_bulk_write_is_undone_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ordered: bool) -> None:
    """A write error raised after its op wrote some of its SQL (the savepoint's case) undoes that op
    alone: the ops before it are kept and, unordered, the ops after it are written."""
    import pymongo
    from pymongo.errors import BulkWriteError

    client = SQLiteClient(tmp_path)
    coll = client["goalhub"].goals
    coll.insert_many([{"_id": i, "n": 0} for i in range(3)])
    write_diff = Collection._write_diff

    def fails_after_writing(self, conn, cid, rid, new, diff):
        write_diff(self, conn, cid, rid, new, diff)
        if new["_id"] == 1:
            raise DuplicateKeyError("E11000 duplicate key (raised by the test after the write)", 11000)

    monkeypatch.setattr(Collection, "_write_diff", fails_after_writing)
    with pytest.raises(BulkWriteError) as raised:
        coll.bulk_write([pymongo.UpdateOne({"_id": i}, {"$set": {"n": 1}}) for i in range(3)], ordered=ordered)
    assert [e["index"] for e in raised.value.details["writeErrors"]] == [1]
    assert raised.value.details["nModified"] == (1 if ordered else 2)
    assert [d["n"] for d in coll.find(sort=[("_id", 1)])] == [1, 0, 0 if ordered else 1]
    assert not client._conn().in_transaction
    client.close()


def test_insert_together_writes_several_collections_in_one_transaction(tmp_path: Path) -> None:
    client = SQLiteClient(tmp_path)
    db = client["goalhub"]
    db.outcomes.create_index("goal_id")
    db.outcomes.insert_one({"_id": "old", "goal_id": "g0"})
    seen = _transactions(client)
    records = [{"_id": f"e|r{i}", "goal_id": "g1"} for i in range(3)]
    db.insert_together([("outcomes", records), ("events", [{"_id": "e", "goal_id": "g1"}]), ("empty", [])])
    assert seen == ["BEGIN IMMEDIATE"]  # one transaction, no savepoint
    assert [d["_id"] for d in db.outcomes.find({"goal_id": "g1"})] == ["e|r0", "e|r1", "e|r2"]  # through the index
    assert db.events.find_one({"goal_id": "g1"}) == {"_id": "e", "goal_id": "g1"}
    assert "empty" not in db.list_collection_names()
    client.close()


def test_insert_together_writes_nothing_when_one_document_is_taken(tmp_path: Path) -> None:
    client = SQLiteClient(tmp_path)
    db = client["goalhub"]
    db.events.insert_one({"_id": "e"})
    with pytest.raises(DuplicateKeyError):
        db.insert_together([("outcomes", [{"_id": "e|r0"}]), ("fresh", [{"_id": 1}]), ("events", [{"_id": "e"}])])
    assert db.outcomes.count_documents({}) == 0 and "fresh" not in db.list_collection_names()
    # "fresh" was made by the transaction undone: made anew, once, where every process finds it.
    db.insert_together([("fresh", [{"_id": 1}])])
    other = SQLiteClient(tmp_path)
    assert other["goalhub"].fresh.find_one({"_id": 1}) == {"_id": 1}
    assert other._conn().execute("SELECT COUNT(*) FROM colls WHERE name = 'fresh'").fetchone() == (1,)
    other.close()
    client.close()


def test_a_collection_made_by_a_write_that_is_undone_is_not_remembered(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite gives an undone collection's id to the next collection made: a process that kept
    it would write its documents into that other collection."""
    client = SQLiteClient(tmp_path)
    insert = Collection._insert_prepared

    def stopped(self, conn, cid, prepared):  # a job's timeout, after the collection's row was made
        raise TimeoutError("the job's timeout")

    monkeypatch.setattr(Collection, "_insert_prepared", stopped)
    with pytest.raises(TimeoutError):
        client.goalhub.things.insert_one({"_id": 1, "what": "thing"})
    monkeypatch.setattr(Collection, "_insert_prepared", insert)
    other = SQLiteClient(tmp_path)  # another process makes its own collection: the freed id
    other.goalhub.cheers.insert_one({"_id": 1, "what": "cheer"})
    client.goalhub.things.insert_one({"_id": 1, "what": "thing"})
    assert [d["what"] for d in other.goalhub.cheers.find()] == ["cheer"]
    assert [d["what"] for d in other.goalhub.things.find()] == ["thing"]
    other.close()
    client.close()


def test_insert_together_prepares_again_when_an_index_came_since_its_plan(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    client = SQLiteClient(tmp_path)
    db = client["goalhub"]
    db.outcomes.insert_one({"_id": "x", "goal_id": "g0"})
    plan = Collection._insert_plan

    def then_another_process_adds_an_index(self, docs):
        planned = plan(self, docs)
        other = SQLiteClient(tmp_path)
        other["goalhub"].outcomes.create_index("goal_id")
        other.close()
        return planned

    monkeypatch.setattr(Collection, "_insert_plan", then_another_process_adds_an_index)
    db.insert_together([("outcomes", [{"_id": "y", "goal_id": "g1"}])])
    keys = client._conn().execute("SELECT COUNT(*) FROM idx WHERE iname = 'goal_id_1'").fetchone()
    assert keys == (2,)  # the new document's entry too, not only the one create_index made
    assert [d["_id"] for d in db.outcomes.find({"goal_id": "g1"})] == ["y"]
    client.close()


def test_store_insert_together_answers_false_where_it_cannot_write_all_or_none(tmp_path: Path) -> None:
    from goalhub import store

    mock = mongomock.MongoClient()["goalhub"]  # as on MongoDB: nothing written, the caller writes its way
    assert store.insert_together(mock, [("outcomes", [{"_id": 1}])]) is False
    assert mock.outcomes.count_documents({}) == 0


def test_a_bulk_writes_updates_computed_before_the_lock_only_where_nothing_changed_since(tmp_path: Path) -> None:
    """Updates are computed before the batch takes the lock; an earlier op of the same batch that
    changed their document (or inserted the one they match) makes them be done again under it."""
    import pymongo
    from pymongo.errors import BulkWriteError

    client = SQLiteClient(tmp_path)
    coll = client["goalhub"].goals
    coll.create_index("u", unique=True, sparse=True)
    coll.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0, "u": "a"}, {"_id": 3, "n": 0}])
    result = coll.bulk_write([
        pymongo.UpdateOne({"_id": 1}, {"$inc": {"n": 1}}),
        pymongo.UpdateOne({"_id": 1}, {"$inc": {"n": 1}}),  # its plan read n = 0: stale once the first is written
        pymongo.InsertOne({"_id": 5, "n": 0}),
        pymongo.UpdateOne({"_id": 5}, {"$inc": {"n": 7}}),  # matched nothing before the lock
        pymongo.ReplaceOne({"_id": 3}, {"n": 30}),
    ])
    assert (result.matched_count, result.modified_count, result.inserted_count) == (4, 4, 1)
    assert {d["_id"]: d["n"] for d in coll.find()} == {1: 2, 2: 0, 3: 30, 5: 7}
    with pytest.raises(BulkWriteError) as raised:  # a planned write that breaks a unique index
        coll.bulk_write([pymongo.UpdateOne({"_id": 1}, {"$set": {"u": "a"}}),
                         pymongo.UpdateOne({"_id": 3}, {"$set": {"n": 31}})], ordered=False)
    assert [(e["index"], e["code"]) for e in raised.value.details["writeErrors"]] == [(0, 11000)]
    assert {d["_id"]: (d["n"], d.get("u")) for d in coll.find()} == {1: (2, None), 2: (0, "a"), 3: (31, None), 5: (7, None)}
    client.close()


class _Refusing(sqlite3.Connection):
    """A connection whose ``PRAGMA journal_mode = WAL`` fails ``refusals`` times first, as SQLite
    answers at once while another process holds the locks it needs."""

    refusals: list[int] = [0]
    code = sqlite3.SQLITE_BUSY
    tries: list[str] = []

    def execute(self, sql, *args):
        if sql.startswith("PRAGMA journal_mode"):
            self.tries.append(sql)
            if self.refusals[0] > 0:
                self.refusals[0] -= 1
                error = sqlite3.OperationalError("database is locked")
                error.sqlite_errorcode = self.code
                raise error
        return super().execute(sql, *args)


@pytest.mark.parametrize("code", [sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, 261])  # 261: SQLITE_BUSY_RECOVERY
def test_a_new_connection_waits_out_the_locks_another_process_holds_at_open(tmp_path: Path, monkeypatch, code) -> None:
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: connect(*a, **k, factory=_Refusing))
    monkeypatch.setattr(_Refusing, "refusals", [3])
    monkeypatch.setattr(_Refusing, "code", code)
    monkeypatch.setattr(_Refusing, "tries", [])
    client = SQLiteClient(tmp_path)
    client.goalhub.goals.insert_one({"_id": 1})
    assert client.goalhub.goals.find_one({"_id": 1}) == {"_id": 1}
    assert len(_Refusing.tries) == 4  # refused 3 times, then done
    client.close()


def test_a_new_connection_gives_up_on_other_errors_at_once_and_on_locks_after_open_wait(tmp_path: Path, monkeypatch) -> None:
    from goalhub import sqlite_store

    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: connect(*a, **k, factory=_Refusing))
    monkeypatch.setattr(_Refusing, "tries", [])
    monkeypatch.setattr(_Refusing, "refusals", [1])
    monkeypatch.setattr(_Refusing, "code", sqlite3.SQLITE_IOERR)
    with pytest.raises(sqlite3.OperationalError):
        SQLiteClient(tmp_path / "a").goalhub.goals.insert_one({"_id": 1})
    assert len(_Refusing.tries) == 1  # not a lock: not tried again
    monkeypatch.setattr(sqlite_store, "OPEN_WAIT", 0.05)
    monkeypatch.setattr(_Refusing, "refusals", [10_000])
    monkeypatch.setattr(_Refusing, "code", sqlite3.SQLITE_BUSY)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        SQLiteClient(tmp_path / "b").goalhub.goals.insert_one({"_id": 1})
    assert time.monotonic() - started < 5
