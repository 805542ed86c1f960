"""The embedded store replaces the document an operator filter on ``_id`` matched and keeps
its ``_id``, as MongoDB does (issue 22): ``{"_id": {"$gt": 1}}`` is not an ``_id`` value."""

from __future__ import annotations

from pymongo import ReturnDocument

from goalhub.sqlite_store import SQLiteClient


def test_replace_one_and_find_one_and_replace_with_an_operator_filter_on_id(tmp_path):
    client = SQLiteClient(tmp_path)
    try:
        docs = client["goalhub"]["docs"]
        docs.insert_many([{"_id": 1, "v": "a"}, {"_id": 2, "v": "b"}])
        result = docs.replace_one({"_id": {"$gt": 1}}, {"v": "replaced"})
        assert (result.matched_count, result.modified_count) == (1, 1)
        assert docs.find_one({"_id": 2}) == {"_id": 2, "v": "replaced"}
        after = docs.find_one_and_replace({"_id": {"$in": [1]}}, {"v": "again"}, return_document=ReturnDocument.AFTER)
        assert after == {"_id": 1, "v": "again"}
        assert docs.count_documents({}) == 2
    finally:
        client.close()
