"""The ``karaoke`` and ``trigger_private`` goal types: the drafts ``prepare`` returns and
each rule it refuses (error class, status, code, field), writing nothing."""

from __future__ import annotations

import time

import pytest
from bson import ObjectId

import goalhub
import goalhub.testing
from goalhub import CreateRequest

STREAMER = str(ObjectId())
CTX_SESSION = "context.session_id"


@pytest.fixture
def goal_types(use_plugins):
    use_plugins("karaoke")
    found = goalhub.testing.goal_types()
    assert {found["karaoke"].goal_class, found["trigger_private"].goal_class} == {"KaraokeGoal", "TriggerPrivateGoal"}
    return found


@pytest.fixture
def sessions(db):
    ids = {name: ObjectId() for name in ("live", "other_streamers", "ended")}
    db.sessions.insert_many(
        [
            {"_id": ids["live"], "user": STREAMER, "active": True, "sources": []},
            {"_id": ids["other_streamers"], "user": str(ObjectId()), "active": True, "sources": []},
            {"_id": ids["ended"], "user": STREAMER, "active": False, "sources": []},
        ]
    )
    return {name: str(_id) for name, _id in ids.items()}


def snapshot(db) -> dict:
    return {name: sorted(map(repr, db[name].find())) for name in db.list_collection_names()}


def request(db, body) -> CreateRequest:
    return CreateRequest(goal_id=str(ObjectId()), user_id=STREAMER, body=body, db=db, now=time.time())


def body_for(session_id: str, **changes) -> dict:
    now = time.time()
    body = {"levels": [{"target": 300}, {"target": 600}], "context": {"session_id": session_id}, "nbf": round(now + 30, 3), "exp": round(now + 630, 3)}
    body.update(changes)
    return body


def test_karaoke_is_active_from_creation_and_exp_is_optional(db, sessions, goal_types):
    before = snapshot(db)
    req = request(db, body_for(sessions["live"]))
    draft = goal_types["karaoke"].prepare(req)
    assert snapshot(db) == before
    assert draft.document(req.goal_id) == {
        "_id": req.goal_id,
        "_cls": "KaraokeGoal",
        "active": True,
        "conditions": {"session_id": sessions["live"]},
        "levels": [{"target": 300}, {"target": 600}],
        "nbf": req.body["nbf"],
        "exp": req.body["exp"],
        "context": {"type": "karaoke", "session_id": sessions["live"]},
        "metadata": {"user_id": STREAMER},
    }
    assert draft.claims == []
    assert goal_types["karaoke"].prepare(request(db, body_for(sessions["live"], nbf=None, exp=None))).exp is None


def test_trigger_private_is_a_countdown_that_is_active_only_once_nbf_has_passed(db, sessions, goal_types):
    prepare = goal_types["trigger_private"].prepare
    req = request(db, body_for(sessions["live"]))
    draft = prepare(req)
    assert draft.document(req.goal_id) == {
        "_id": req.goal_id,
        "_cls": "TriggerPrivateGoal",
        "active": False,
        "conditions": {"session_id": sessions["live"]},
        "levels": [{"target": 300}, {"target": 600}],
        "nbf": req.body["nbf"],
        "exp": req.body["exp"],
        "context": {"type": "trigger_private", "session_id": sessions["live"]},
        "metadata": {"user_id": STREAMER},
    }
    assert prepare(request(db, body_for(sessions["live"], nbf=time.time() - 1))).active is True
    assert prepare(request(db, body_for(sessions["live"], nbf=None))).active is True


REFUSALS = [
    ("unknown session", {"context": {"session_id": str(ObjectId())}}, goalhub.NotFound, "session_not_found", CTX_SESSION),
    ("another streamer's session", {"context": {"session_id": "{other_streamers}"}}, goalhub.Forbidden, "session_not_owned", CTX_SESSION),
    ("ended session", {"context": {"session_id": "{ended}"}}, goalhub.Unprocessable, "session_ended", CTX_SESSION),
    ("operator in session id", {"context": {"session_id": {"$ne": None}}}, goalhub.BadRequest, "invalid_id", CTX_SESSION),
    ("levels missing", {"levels": None}, goalhub.BadRequest, "missing_field", "levels"),
    ("second target negative", {"levels": [{"target": 300}, {"target": -1}]}, goalhub.BadRequest, "invalid_target", "levels.1.target"),
    ("target infinite", {"levels": [{"target": float("inf")}]}, goalhub.BadRequest, "invalid_number", "levels.0.target"),
    ("nbf a string", {"nbf": "1746416602.371"}, goalhub.BadRequest, "invalid_number", "nbf"),
    ("exp in milliseconds", {"exp": 1746416602371}, goalhub.BadRequest, "invalid_timestamp", "exp"),
    ("exp before nbf", {"nbf": time.time() + 100, "exp": time.time() + 50}, goalhub.BadRequest, "invalid_window", "exp"),
    ("exp passed", {"nbf": None, "exp": time.time() - 5}, goalhub.BadRequest, "invalid_window", "exp"),
]


@pytest.mark.parametrize("type_name", ["karaoke", "trigger_private"])
@pytest.mark.parametrize("case, changes, error, code, field", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_each_broken_rule_is_refused_and_nothing_written(db, sessions, goal_types, type_name, case, changes, error, code, field):
    changes = dict(changes)
    if "context" in changes and isinstance(changes["context"]["session_id"], str):
        changes["context"] = {"session_id": changes["context"]["session_id"].format(**sessions)}
    before = snapshot(db)
    with pytest.raises(error) as raised:
        goal_types[type_name].prepare(request(db, body_for(sessions["live"], **changes)))
    assert (raised.value.status, raised.value.code, raised.value.field) == (error.status, code, field)
    assert snapshot(db) == before


def test_trigger_private_needs_exp(db, sessions, goal_types):
    with pytest.raises(goalhub.BadRequest) as raised:
        goal_types["trigger_private"].prepare(request(db, body_for(sessions["live"], exp=None)))
    assert (raised.value.code, raised.value.field) == ("missing_field", "exp")
