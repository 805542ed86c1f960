"""The embedded store never fails silently: what it does not support, it refuses by name.

Each pymongo argument or method that the embedded store cannot honour raises an error naming
it (``NotImplementedError: goalhub's embedded store does not support collation= in find``)
before anything is read or written; an argument pymongo does not know is a ``TypeError``
naming it. Options that cannot change an answer here (``comment``, ``max_time_ms``,
``batch_size``) are taken, and a ``hint`` is taken when MongoDB would answer the same.

mongomock, used for fast unit tests through ``mongomock://``, is not held to this: it
ignores ``collation`` in ``find`` (see the last test), which is why it is for tests only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import mongomock
import pymongo
import pytest
from pymongo.errors import OperationFailure

from goalhub.sqlite_store import SQLiteClient

CASE_INSENSITIVE = {"locale": "en", "strength": 2}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[SQLiteClient]:
    client = SQLiteClient(tmp_path)
    yield client
    client.close()


@pytest.fixture
def goals(client: SQLiteClient):
    goals = client["goalhub"].goals
    goals.insert_many([{"_id": 1, "name": "Ada", "tags": [{"k": "a", "n": 1}]}, {"_id": 2, "name": "ada", "tags": []}])
    return goals


def refused(what: str) -> pytest.RaisesExc:
    return pytest.raises(NotImplementedError, match=re.escape(f"goalhub's embedded store does not support {what}"))


@pytest.mark.parametrize("call, what", [
    (lambda c: list(c.find({"name": "ada"}, collation=CASE_INSENSITIVE)), "collation= in find"),
    (lambda c: c.find({"name": "ada"}).collation(CASE_INSENSITIVE).to_list(), "collation in find"),
    (lambda c: c.find_one({"name": "ada"}, collation=CASE_INSENSITIVE), "collation= in find_one"),
    (lambda c: c.count_documents({"name": "ada"}, collation=CASE_INSENSITIVE), "collation= in count_documents"),
    (lambda c: c.distinct("name", {}, collation=CASE_INSENSITIVE), "collation= in distinct"),
    (lambda c: c.update_one({"name": "ada"}, {"$set": {"x": 1}}, collation=CASE_INSENSITIVE), "collation= in update_one"),
    (lambda c: c.update_many({"name": "ada"}, {"$set": {"x": 1}}, collation=CASE_INSENSITIVE), "collation= in update_many"),
    (lambda c: c.replace_one({"name": "ada"}, {"x": 1}, collation=CASE_INSENSITIVE), "collation= in replace_one"),
    (lambda c: c.delete_many({"name": "ada"}, collation=CASE_INSENSITIVE), "collation= in delete_many"),
    (lambda c: c.find_one_and_update({"name": "ada"}, {"$set": {"x": 1}}, collation=CASE_INSENSITIVE),
     "collation= in find_one_and_update"),
    (lambda c: c.find_one_and_delete({"name": "ada"}, collation=CASE_INSENSITIVE), "collation= in find_one_and_delete"),
    (lambda c: c.update_one({"_id": 1}, {"$set": {"tags.$[t].n": 9}}, array_filters=[{"t.k": "a"}]),
     "array_filters= in update_one"),
    (lambda c: c.update_many({}, {"$set": {"tags.$[t].n": 9}}, array_filters=[{"t.k": "a"}]),
     "array_filters= in update_many"),
    (lambda c: c.find_one_and_update({"_id": 1}, {"$set": {"tags.$[t].n": 9}}, array_filters=[{"t.k": "a"}]),
     "array_filters= in find_one_and_update"),
    (lambda c: c.bulk_write([pymongo.DeleteOne({"_id": 2}),
                             pymongo.UpdateOne({"_id": 1}, {"$set": {"tags.$[t].n": 9}}, array_filters=[{"t.k": "a"}])]),
     "array_filters= in update_one"),
    (lambda c: c.update_one({"_id": 1}, {"$set": {"x": 1}}, let={"v": 1}), "let= in update_one"),
    (lambda c: list(c.find({}, allow_disk_use=True)), "allow_disk_use= in find"),
    (lambda c: c.insert_one({"x": 1}, session=object()), "session= in insert_one"),
    (lambda c: c.aggregate([{"$match": {}}]), "aggregate"),
    (lambda c: c.watch(), "Collection.watch"),
    (lambda c: c.drop_index("name_1"), "Collection.drop_index"),
    (lambda c: c.find({}).explain(), "Cursor.explain"),
    (lambda c: c.database.create_collection("other"), "Database.create_collection"),
    (lambda c: c.database.client.list_database_names(), "MongoClient.list_database_names"),
    (lambda c: c.create_index("at", expireAfterSeconds=60), "expireAfterSeconds= in create_index"),
    (lambda c: c.database.command("ping", session=object()), "session= in command"),
    (lambda c: c.create_index("name", collation=CASE_INSENSITIVE), "collation= in create_index"),
])
def test_unsupported_arguments_and_methods_are_refused_by_name(goals, call, what: str) -> None:
    before = list(goals.find())
    with refused(what):
        call(goals)
    assert list(goals.find()) == before  # nothing was written, not even the bulk's first delete


@pytest.mark.parametrize("call, name", [
    (lambda c: c.find(filtr={"_id": 1}), "filtr"),
    (lambda c: c.find_one({"_id": 1}, projecton={"_id": 1}), "projecton"),
    (lambda c: c.update_one({"_id": 1}, {"$set": {"x": 1}}, upsrt=True), "upsrt"),
    (lambda c: c.delete_one({"_id": 1}, multi=True), "multi"),
    (lambda c: c.count_documents({}, maxTime=5), "maxTime"),
])
def test_unknown_keyword_arguments_are_type_errors_naming_them(goals, call, name: str) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(name))):
        call(goals)
    assert goals.find_one({"x": 1}) is None


def test_options_that_change_no_answer_are_taken(goals) -> None:
    assert [d["_id"] for d in goals.find({}, comment="why", max_time_ms=50, batch_size=1).sort("_id")] == [1, 2]
    assert goals.find({}).batch_size(1).max_time_ms(10).comment("c").to_list() == goals.find({}).to_list()
    assert goals.count_documents({}, maxTimeMS=50, comment="c") == 2
    assert goals.update_one({"_id": 1}, {"$set": {"x": 1}}, bypass_document_validation=True, session=None).matched_count == 1


def test_a_hint_is_taken_when_it_names_an_ordinary_index(goals) -> None:
    goals.create_index("name")
    for hint in ("name_1", [("name", 1)], "_id_", [("$natural", 1)]):
        assert [d["_id"] for d in goals.find({"name": "ada"}, hint=hint)] == [2]
        assert [d["_id"] for d in goals.find({"name": "ada"}).hint(hint)] == [2]
    assert goals.count_documents({"name": "Ada"}, hint="name_1") == 1
    assert goals.update_one({"name": "Ada"}, {"$set": {"x": 1}}, hint="name_1").modified_count == 1
    assert goals.delete_one({"name": "Ada"}, hint=[("name", 1)]).deleted_count == 1


def test_a_hint_naming_no_index_is_mongodbs_error(goals) -> None:
    with pytest.raises(OperationFailure, match="hint provided does not correspond to an existing index"):
        goals.find_one({"name": "ada"}, hint="name_1")
    with pytest.raises(OperationFailure):
        goals.update_one({"name": "ada"}, {"$set": {"x": 1}}, hint=[("nope", 1)])
    assert goals.find_one({"x": 1}) is None


def test_a_hint_on_a_sparse_or_partial_index_is_refused(goals) -> None:
    # MongoDB answers through such an index without the documents it leaves out: another answer.
    goals.create_index("email", sparse=True)
    goals.create_index("name", partialFilterExpression={"name": "Ada"}, name="ada_only")
    with refused("hint= naming the sparse or partial index 'email_1' in find"):
        goals.find({}, hint="email_1").to_list()
    with refused("hint= naming the sparse or partial index 'ada_only' in update_many"):
        goals.update_many({}, {"$set": {"x": 1}}, hint="ada_only")


def test_array_filters_are_refused_and_the_store_is_unchanged_on_mongomock_too() -> None:
    """mongomock refuses ``array_filters`` as well; it is ``collation`` in ``find`` that it drops."""
    goals = mongomock.MongoClient()["goalhub"].goals
    goals.insert_many([{"_id": 1, "name": "Ada"}, {"_id": 2, "name": "ada"}])
    with pytest.raises(NotImplementedError):
        goals.update_one({"_id": 1}, {"$set": {"tags.$[t].n": 9}}, array_filters=[{"t.k": "a"}])
    # The silent drop the embedded store refuses: a case-insensitive query answered case-sensitively.
    assert [d["_id"] for d in goals.find({"name": "ada"}, collation=CASE_INSENSITIVE)] == [2]
