"""One conformance suite for every document store goalhub can run on.

The same tests run against the embedded SQLite store, mongomock, and (when
GOALHUB_TEST_MONGO_URI is set) a real MongoDB, so the embedded default cannot drift from pymongo.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import mongomock
import pymongo
import pytest
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from goalhub.sqlite_store import SQLiteClient


@pytest.fixture(params=["sqlite", "mongomock", "mongodb"])
def db(request: pytest.FixtureRequest, tmp_path) -> Iterator:
    if request.param == "sqlite":
        client = SQLiteClient(tmp_path)
        yield client["goalhub"]
        client.close()
    elif request.param == "mongomock":
        yield mongomock.MongoClient()["goalhub"]
    else:
        uri = os.environ.get("GOALHUB_TEST_MONGO_URI")
        if not uri:
            pytest.skip("GOALHUB_TEST_MONGO_URI not set: no real MongoDB to test against")
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
        name = f"goalhub_test_{uuid.uuid4().hex[:12]}"
        yield client[name]
        client.drop_database(name)
        client.close()


def test_insert_and_find_by_id(db) -> None:
    oid = ObjectId()
    assert db.goals.insert_one({"_id": oid, "title": "by oid"}).inserted_id == oid
    db.goals.insert_one({"_id": str(oid), "title": "by str"})  # same text, other type: no collision
    assert db.goals.find_one(oid)["title"] == "by oid"
    assert db.goals.find_one({"_id": oid})["title"] == "by oid"
    assert db.goals.find_one({"_id": str(oid)})["title"] == "by str"
    assert db.goals.find_one({"_id": ObjectId()}) is None


def test_generated_id_and_lossless_types(db) -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123000)
    doc = {"when": when, "nested": {"list": [1, "two", {"three": 3.5}]}, "ref": ObjectId(), "none": None}
    res = db.goals.insert_one(doc)
    assert isinstance(res.inserted_id, ObjectId) and doc["_id"] == res.inserted_id
    assert db.goals.find_one({"_id": res.inserted_id}) == doc
    assert db.goals.find_one({"when": when})["_id"] == res.inserted_id


def test_dotted_set_and_unset(db) -> None:
    db.goals.insert_one({"_id": "g", "meta": {"a": 1, "b": 2}, "gone": True})
    res = db.goals.update_one({"_id": "g"}, {"$set": {"meta.a": 10, "meta.c.d": "deep"}, "$unset": {"gone": ""}})
    assert (res.matched_count, res.modified_count, res.upserted_id) == (1, 1, None)
    assert db.goals.find_one({"_id": "g"}) == {"_id": "g", "meta": {"a": 10, "b": 2, "c": {"d": "deep"}}}
    assert db.goals.find_one({"meta.c.d": "deep"})["_id"] == "g"


def test_query_operators(db) -> None:
    db.goals.insert_many([{"_id": i, "n": i, **({"odd": True} if i % 2 else {})} for i in range(6)])

    def ids(flt: dict) -> list:
        return sorted(d["_id"] for d in db.goals.find(flt))

    assert ids({"odd": {"$exists": True}}) == [1, 3, 5]
    assert ids({"odd": {"$exists": False}}) == [0, 2, 4]
    assert ids({"n": {"$lt": 2}}) == [0, 1]
    assert ids({"n": {"$gt": 3}}) == [4, 5]
    assert ids({"n": {"$gt": 1, "$lt": 4}}) == [2, 3]
    assert ids({"n": {"$in": [0, 5, 99]}}) == [0, 5]
    assert ids({"n": {"$in": []}}) == []
    assert ids({"_id": {"$in": [2, 3]}}) == [2, 3]
    assert ids({"n": {"$ne": 0}}) == [1, 2, 3, 4, 5]
    assert ids({"$and": [{"n": {"$gte": 1}}, {"odd": True}]}) == [1, 3, 5]
    assert ids({"$or": [{"n": 0}, {"n": 5}]}) == [0, 5]


def test_inc(db) -> None:
    db.goals.insert_one({"_id": "g", "count": 1})
    db.goals.update_one({"_id": "g"}, {"$inc": {"count": 2, "fresh": 5}})
    assert db.goals.find_one({"_id": "g"}) == {"_id": "g", "count": 3, "fresh": 5}


def test_positional_update_on_array_of_subdocuments(db) -> None:
    pairs = [{"funding_goal": "f1", "show_goal": None}, {"funding_goal": "f2", "show_goal": None}]
    db.shows.insert_one({"_id": "s", "show_goal_pairs": pairs})
    res = db.shows.update_one({"show_goal_pairs.funding_goal": "f2"}, {"$set": {"show_goal_pairs.$.show_goal": "g2"}})
    assert res.modified_count == 1
    assert db.shows.find_one({"_id": "s"})["show_goal_pairs"] == [
        {"funding_goal": "f1", "show_goal": None}, {"funding_goal": "f2", "show_goal": "g2"}]


def test_array_updates(db) -> None:
    db.goals.insert_one({"_id": "g", "tags": ["a"]})
    db.goals.update_one({"_id": "g"}, {"$push": {"tags": "b", "log": {"at": 1}}})
    db.goals.update_one({"_id": "g"}, {"$addToSet": {"tags": "a"}})
    db.goals.update_one({"_id": "g"}, {"$addToSet": {"tags": "c"}})
    db.goals.update_one({"_id": "g"}, {"$pull": {"tags": "b"}})
    assert db.goals.find_one({"_id": "g"}) == {"_id": "g", "tags": ["a", "c"], "log": [{"at": 1}]}
    assert db.goals.find_one({"tags": "c"})["_id"] == "g"


def test_upsert_with_set_on_insert(db) -> None:
    res = db.goals.update_one({"_id": "g"}, {"$setOnInsert": {"created": 1}, "$set": {"seen": 1}}, upsert=True)
    assert (res.matched_count, res.modified_count, res.upserted_id) == (0, 0, "g")
    res = db.goals.update_one({"_id": "g"}, {"$setOnInsert": {"created": 2}, "$set": {"seen": 2}}, upsert=True)
    assert (res.matched_count, res.modified_count, res.upserted_id) == (1, 1, None)
    assert db.goals.find_one({"_id": "g"}) == {"_id": "g", "created": 1, "seen": 2}
    res = db.goals.update_one({"key": "k"}, {"$set": {"v": 1}}, upsert=True)
    assert isinstance(res.upserted_id, ObjectId)
    assert db.goals.find_one({"key": "k"}) == {"_id": res.upserted_id, "key": "k", "v": 1}


def test_find_one_and_update(db) -> None:
    db.goals.insert_one({"_id": "g", "n": 1})
    before = db.goals.find_one_and_update({"_id": "g"}, {"$inc": {"n": 1}})
    assert before == {"_id": "g", "n": 1}
    after = db.goals.find_one_and_update({"_id": "g"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)
    assert after == {"_id": "g", "n": 3}
    assert db.goals.find_one_and_update({"_id": "g", "n": 99}, {"$inc": {"n": 1}}) is None
    assert db.goals.find_one_and_update({"_id": "nope"}, {"$set": {"n": 1}}, return_document=True) is None
    assert db.goals.find_one({"_id": "g"})["n"] == 3


def test_find_one_and_update_claim_sort_projection_upsert(db) -> None:
    db.jobs.insert_many([{"_id": i, "prio": p} for i, p in enumerate([2, 9, 5])])
    got = db.jobs.find_one_and_update({"claimed": {"$exists": False}}, {"$set": {"claimed": "w1"}},
                                      sort=[("prio", -1)], projection={"_id": 1},
                                      return_document=ReturnDocument.AFTER)
    assert got == {"_id": 1}
    assert db.jobs.find_one({"_id": 1})["claimed"] == "w1"
    new = db.jobs.find_one_and_update({"_id": 7}, {"$setOnInsert": {"prio": 0}}, upsert=True,
                                      return_document=ReturnDocument.AFTER)
    assert new == {"_id": 7, "prio": 0}
    assert db.jobs.find_one_and_update({"_id": 8}, {"$set": {"prio": 1}}, upsert=True) is None
    assert db.jobs.count_documents({}) == 5


def test_duplicate_id(db) -> None:
    db.goals.insert_one({"_id": "g"})
    with pytest.raises(DuplicateKeyError):
        db.goals.insert_one({"_id": "g"})
    db.goals.insert_one({"_id": 1})
    with pytest.raises(DuplicateKeyError):
        db.goals.insert_one({"_id": 1.0})  # numbers compare by value, as in Mongo
    with pytest.raises(BulkWriteError) as info:
        db.goals.insert_many([{"_id": "a"}, {"_id": "g"}, {"_id": "b"}])
    assert info.value.details["nInserted"] == 1
    assert db.goals.count_documents({}) == 3


def test_unique_index(db) -> None:
    assert db.goals.create_index("slug", unique=True) == "slug_1"
    assert db.goals.create_index([("slug", 1)], unique=True) == "slug_1"  # idempotent
    db.goals.insert_one({"slug": "a"})
    db.goals.insert_one({"slug": "b"})
    with pytest.raises(DuplicateKeyError):
        db.goals.insert_one({"slug": "a"})
    with pytest.raises(DuplicateKeyError):
        db.goals.update_one({"slug": "b"}, {"$set": {"slug": "a"}})
    db.goals.update_one({"slug": "b"}, {"$set": {"slug": "c"}})
    db.goals.insert_one({"slug": "b"})  # the old value is free again
    assert sorted(d["slug"] for d in db.goals.find()) == ["a", "b", "c"]
    info = db.goals.index_information()
    assert info["slug_1"]["unique"] is True and "_id_" in info


def test_compound_unique_index_and_existing_duplicates(db) -> None:
    name = db.links.create_index([("goal", 1), ("receiver", 1)], unique=True)
    db.links.insert_one({"goal": "g", "receiver": "r1"})
    db.links.insert_one({"goal": "g", "receiver": "r2"})
    with pytest.raises(DuplicateKeyError):
        db.links.insert_one({"goal": "g", "receiver": "r1"})
    assert db.links.count_documents({"goal": "g"}) == 2
    assert name in db.links.index_information()
    db.dupes.insert_many([{"k": 1}, {"k": 1}])
    with pytest.raises(DuplicateKeyError):
        db.dupes.create_index("k", unique=True)


def test_delete(db) -> None:
    db.goals.insert_many([{"_id": i, "even": i % 2 == 0} for i in range(5)])
    assert db.goals.delete_one({"_id": 0}).deleted_count == 1
    assert db.goals.delete_one({"_id": 0}).deleted_count == 0
    assert db.goals.delete_many({"even": True}).deleted_count == 2
    assert db.goals.find_one_and_delete({"_id": 1}) == {"_id": 1, "even": False}
    assert db.goals.find_one_and_delete({"_id": 1}) is None
    assert [d["_id"] for d in db.goals.find()] == [3]


def test_count_distinct_and_replace(db) -> None:
    db.goals.insert_many([{"_id": i, "kind": "ab"[i % 2]} for i in range(5)])
    assert db.goals.count_documents({}) == 5
    assert db.goals.count_documents({"kind": "a"}) == 3
    assert db.goals.count_documents({"kind": "a"}, limit=2) == 2
    assert db.goals.estimated_document_count() == 5
    assert sorted(db.goals.distinct("kind")) == ["a", "b"]
    assert db.goals.distinct("_id", {"kind": "b"}) == [1, 3]
    res = db.goals.replace_one({"_id": 0}, {"kind": "z"})
    assert (res.matched_count, res.modified_count) == (1, 1)
    assert db.goals.find_one({"_id": 0}) == {"_id": 0, "kind": "z"}
    res = db.goals.update_many({"kind": "b"}, {"$set": {"seen": True}})
    assert (res.matched_count, res.modified_count) == (2, 2)


def test_sort_limit_skip(db) -> None:
    db.goals.insert_many([{"_id": i, "score": s, "name": n}
                          for i, (s, n) in enumerate([(3, "c"), (1, "a"), (2, "b"), (3, "a")])])
    assert [d["_id"] for d in db.goals.find().sort("score", -1).limit(2)] == [0, 3]
    assert [d["_id"] for d in db.goals.find(sort=[("score", 1), ("name", -1)])] == [1, 2, 0, 3]
    assert [d["_id"] for d in db.goals.find({}, sort=[("score", -1), ("name", 1)], skip=1, limit=2)] == [0, 2]
    assert [d["_id"] for d in db.goals.find().sort([("name", 1), ("score", 1)]).skip(1)] == [1, 3, 2, 0][1:]
    assert db.goals.find_one({}, sort=[("score", 1)])["_id"] == 1


def test_projection(db) -> None:
    db.goals.insert_one({"_id": "g", "a": 1, "b": {"c": 2, "d": 3}, "e": 4})
    assert db.goals.find_one({"_id": "g"}, {"a": 1}) == {"_id": "g", "a": 1}
    assert db.goals.find_one({"_id": "g"}, {"_id": 0, "a": 1, "b.c": 1}) == {"a": 1, "b": {"c": 2}}
    assert db.goals.find_one({"_id": "g"}, {"b": 0, "e": 0}) == {"_id": "g", "a": 1}
    assert list(db.goals.find({}, {"_id": 0, "e": 1})) == [{"e": 4}]


def test_collections_and_ping(db) -> None:
    db.goals.insert_one({"x": 1})
    db["signals"].insert_one({"y": 1})
    assert {"goals", "signals"} <= set(db.list_collection_names())
    db.drop_collection("signals")
    assert "signals" not in db.list_collection_names()
    assert db.signals.find_one() is None
    db.goals.drop()
    assert db.goals.count_documents({}) == 0
    assert db.command("ping")["ok"] == 1.0
    assert db.get_collection("goals").name == "goals"


def test_find_one_and_replace(db) -> None:
    db.goals.insert_many([{"_id": 1, "n": 1, "old": True}, {"_id": 2, "n": 2, "old": True}])
    before = db.goals.find_one_and_replace({"old": True}, {"n": 20}, sort=[("n", -1)])
    assert before == {"_id": 2, "n": 2, "old": True}
    assert db.goals.find_one({"_id": 2}) == {"_id": 2, "n": 20}
    after = db.goals.find_one_and_replace({"_id": 1}, {"n": 10}, projection={"n": 1, "_id": 0},
                                          return_document=ReturnDocument.AFTER)
    assert after == {"n": 10}
    assert db.goals.find_one_and_replace({"_id": 3}, {"n": 30}) is None
    assert db.goals.count_documents({}) == 2
    upserted = db.goals.find_one_and_replace({"_id": 3}, {"n": 30}, upsert=True, return_document=ReturnDocument.AFTER)
    assert upserted == {"_id": 3, "n": 30}
    with pytest.raises(ValueError):
        db.goals.find_one_and_replace({"_id": 1}, {"$set": {"n": 0}})


def test_bulk_write_common_operations(db) -> None:
    if isinstance(db, mongomock.Database):
        pytest.skip("mongomock's bulk builder predates pymongo's UpdateOne(sort=): TypeError inside mongomock")
    db.goals.insert_many([{"_id": i, "n": i} for i in range(4)])
    result = db.goals.bulk_write([
        pymongo.InsertOne({"_id": 10, "n": 10}),
        pymongo.UpdateOne({"_id": 0}, {"$inc": {"n": 100}}),
        pymongo.UpdateMany({"n": {"$lt": 3}}, {"$set": {"small": True}}),
        pymongo.UpdateOne({"_id": 20}, {"$set": {"n": 20}}, upsert=True),
        pymongo.ReplaceOne({"_id": 3}, {"n": 33}),
        pymongo.DeleteOne({"_id": 10}),
        pymongo.DeleteMany({"small": True}),
    ])
    assert (result.inserted_count, result.matched_count, result.modified_count) == (1, 4, 4)
    assert (result.upserted_count, result.deleted_count) == (1, 3)
    assert result.upserted_ids == {3: 20}
    assert sorted((d["_id"], d["n"]) for d in db.goals.find()) == [(0, 100), (3, 33), (20, 20)]


@pytest.mark.parametrize("ordered", [True, False])
def test_bulk_write_errors(db, ordered: bool) -> None:
    db.goals.insert_one({"_id": 1})
    with pytest.raises(BulkWriteError) as raised:
        db.goals.bulk_write([pymongo.InsertOne({"_id": 0}), pymongo.InsertOne({"_id": 1}), pymongo.InsertOne({"_id": 2})],
                            ordered=ordered)
    details = raised.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
    assert details["nInserted"] == (1 if ordered else 2)
    assert sorted(d["_id"] for d in db.goals.find()) == ([0, 1] if ordered else [0, 1, 2])
