"""The ``exclusive`` and ``trigger_exclusive`` goal types: what ``prepare`` accepts, the
draft it returns, and each rule it refuses (error class, status, code, field), writing nothing."""

from __future__ import annotations

import copy
import json
import time

import pytest
from bson import ObjectId

import goalhub
import goalhub.testing
from goalhub import CreateRequest

# Seed 000's request body, verbatim; the test inserts a session and a trigger goal under its ids.
SEED_000_BODY = (
    '{"levels":[{"target":300}],"context":{"session_id":"681831d3292549a5d91df267",'
    '"trigger_exclusive_goal_id":"68183380860748ad566a6aca"},"nbf":1746416602.371}'
)
SEED_STREAMER = "6800a9073e0c346531958b03"  # the ``sub`` of seed 000's token
SESSION_ID, TRIGGER_ID = "681831d3292549a5d91df267", "68183380860748ad566a6aca"


@pytest.fixture
def goal_types(use_plugins):
    use_plugins("exclusive")
    found = goalhub.testing.goal_types()
    assert {found["exclusive"].goal_class, found["trigger_exclusive"].goal_class} == {"ExclusiveGoal", "TriggerExclusiveGoal"}
    return found


@pytest.fixture
def world(db):
    """Seed 000's session (live, the token's streamer) and its trigger goal, countdown ended."""
    now = time.time()

    def session(_id, user=SEED_STREAMER, active=True):
        return {"_id": ObjectId(_id), "user": user, "active": active, "sources": [], "exclusive_goal_pairs": {}}

    def trigger(_id, session_id=SESSION_ID, cls="TriggerExclusiveGoal", exp=now - 5, **extra):
        return {
            "_id": ObjectId(_id),
            "_cls": cls,
            "active": False,
            "conditions": {"session_id": session_id, "exclusive_to": "viewer-1"},
            "levels": [{"target": 60}],
            "nbf": now - 65,
            "exp": exp,
            "context": {"type": "trigger_exclusive", "session_id": session_id, "exclusive_to": "viewer-1", **extra},
            "metadata": {"user_id": SEED_STREAMER},
        }

    ids = {name: str(ObjectId()) for name in ("other_streamers", "ended", "other_session", "running", "no_exp", "bound", "claimed", "funding", "no_key")}
    db.sessions.insert_many(
        [
            session(SESSION_ID),
            session(ids["other_streamers"], user=str(ObjectId())),
            session(ids["ended"], active=False),
        ]
    )
    claimed = trigger(ids["claimed"])
    claimed["claims"] = {"exclusive_goal": str(ObjectId())}
    no_key = trigger(ids["no_key"])
    del no_key["conditions"]["exclusive_to"]
    db.goals.insert_many(
        [
            trigger(TRIGGER_ID),
            trigger(ids["other_session"], session_id=ids["other_streamers"]),
            trigger(ids["running"], exp=now + 60),
            trigger(ids["no_exp"], exp=None),
            trigger(ids["bound"], exclusive_goal_id=str(ObjectId())),
            claimed,
            trigger(ids["funding"], cls="ShowFundingGoal"),
            no_key,
        ]
    )
    return ids


def snapshot(db) -> dict:
    return {name: sorted(map(repr, db[name].find())) for name in db.list_collection_names()}


def request(db, body, user=SEED_STREAMER, now=None) -> CreateRequest:
    return CreateRequest(goal_id=str(ObjectId()), user_id=user, body=body, db=db, now=now or time.time())


def test_seed_000_body_is_accepted_and_drafted_as_the_seed_says(db, world, goal_types):
    before = snapshot(db)
    req = request(db, json.loads(SEED_000_BODY))
    draft = goal_types["exclusive"].prepare(req)
    assert snapshot(db) == before  # prepare only reads

    assert draft.document(req.goal_id) == {
        "_id": req.goal_id,
        "_cls": "ExclusiveGoal",
        "active": True,
        "conditions": {"session_id": SESSION_ID, "exclusive_to": "viewer-1"},
        "levels": [{"target": 300}],
        "nbf": 1746416602.371,
        "exp": None,
        "context": {
            "type": "exclusive",
            "exclusive_to": "viewer-1",
            "session_id": SESSION_ID,
            "trigger_exclusive_goal_id": TRIGGER_ID,
        },
        "metadata": {"user_id": SEED_STREAMER},
    }
    [claim] = draft.claims
    assert (claim.collection, claim.field, claim.error_field) == ("goals", "claims.exclusive_goal", "context.trigger_exclusive_goal_id")
    assert claim.filter == {"_id": ObjectId(TRIGGER_ID), "context.exclusive_goal_id": {"$exists": False}}


def test_the_claim_lets_exactly_one_of_two_requests_bind_the_trigger(db, world, goal_types):
    """What the core does with a claim, against this store: the second one matches nothing."""
    drafts = [goal_types["exclusive"].prepare(request(db, json.loads(SEED_000_BODY))) for _ in range(2)]
    won = []
    for index, draft in enumerate(drafts):
        claim = draft.claims[0]
        result = db[claim.collection].update_one({**claim.filter, claim.field: {"$exists": False}}, {"$set": {claim.field: f"goal-{index}"}})
        won.append(result.modified_count)
    assert won == [1, 0]
    # once claimed by another request, prepare itself refuses
    with pytest.raises(goalhub.Conflict):
        goal_types["exclusive"].prepare(request(db, json.loads(SEED_000_BODY)))


def seed_body(**changes) -> dict:
    body = json.loads(SEED_000_BODY)
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is DELETE:
            del target[leaf]
        else:
            target[leaf] = value
    return body


DELETE = object()
CTX_SESSION, CTX_TRIGGER = "context.session_id", "context.trigger_exclusive_goal_id"

# (case, body changes (with "{name}" naming a world id), user, error class, code, field)
EXCLUSIVE_REFUSALS = [
    ("unknown session", {"context__session_id": str(ObjectId())}, None, goalhub.NotFound, "session_not_found", CTX_SESSION),
    ("another streamer's session", {"context__session_id": "{other_streamers}"}, None, goalhub.Forbidden, "session_not_owned", CTX_SESSION),
    ("caller is another streamer", {}, str(ObjectId()), goalhub.Forbidden, "session_not_owned", CTX_SESSION),
    ("ended session", {"context__session_id": "{ended}"}, None, goalhub.Unprocessable, "session_ended", CTX_SESSION),
    ("unknown trigger", {"context__trigger_exclusive_goal_id": str(ObjectId())}, None, goalhub.NotFound, "goal_not_found", CTX_TRIGGER),
    ("trigger of another session", {"context__trigger_exclusive_goal_id": "{other_session}"}, None, goalhub.Unprocessable, "goal_of_another_session", CTX_TRIGGER),
    ("not a trigger goal", {"context__trigger_exclusive_goal_id": "{funding}"}, None, goalhub.Unprocessable, "wrong_goal_class", CTX_TRIGGER),
    ("countdown not ended", {"context__trigger_exclusive_goal_id": "{running}"}, None, goalhub.Unprocessable, "countdown_not_ended", CTX_TRIGGER),
    ("countdown without exp", {"context__trigger_exclusive_goal_id": "{no_exp}"}, None, goalhub.Unprocessable, "countdown_not_ended", CTX_TRIGGER),
    ("already bound", {"context__trigger_exclusive_goal_id": "{bound}"}, None, goalhub.Conflict, "already_bound", CTX_TRIGGER),
    ("claimed by another request", {"context__trigger_exclusive_goal_id": "{claimed}"}, None, goalhub.Conflict, "already_bound", CTX_TRIGGER),
    ("trigger without exclusive_to", {"context__trigger_exclusive_goal_id": "{no_key}"}, None, goalhub.Unprocessable, "trigger_without_exclusive_to", CTX_TRIGGER),
    ("levels missing", {"levels": DELETE}, None, goalhub.BadRequest, "missing_field", "levels"),
    ("levels empty", {"levels": []}, None, goalhub.BadRequest, "invalid_levels", "levels"),
    ("levels not a list", {"levels": {"target": 300}}, None, goalhub.BadRequest, "invalid_levels", "levels"),
    ("target zero", {"levels": [{"target": 0}]}, None, goalhub.BadRequest, "invalid_target", "levels.0.target"),
    ("target negative", {"levels": [{"target": -300}]}, None, goalhub.BadRequest, "invalid_target", "levels.0.target"),
    ("target a string", {"levels": [{"target": "300"}]}, None, goalhub.BadRequest, "invalid_number", "levels.0.target"),
    ("target a boolean", {"levels": [{"target": True}]}, None, goalhub.BadRequest, "invalid_number", "levels.0.target"),
    ("target missing", {"levels": [{}]}, None, goalhub.BadRequest, "missing_field", "levels.0.target"),
    ("nbf a string", {"nbf": "1746416602"}, None, goalhub.BadRequest, "invalid_number", "nbf"),
    ("nbf in milliseconds", {"nbf": 1746416602371}, None, goalhub.BadRequest, "invalid_timestamp", "nbf"),
    ("exp given", {"exp": 1746420000}, None, goalhub.BadRequest, "unexpected_field", "exp"),
    ("context missing", {"context": DELETE}, None, goalhub.BadRequest, "missing_field", "context"),
    ("context not an object", {"context": "681831d3292549a5d91df267"}, None, goalhub.BadRequest, "invalid_type", "context"),
    ("session id missing", {"context__session_id": DELETE}, None, goalhub.BadRequest, "missing_field", CTX_SESSION),
    ("session id not hex", {"context__session_id": "681831d3292549a5d91df26z"}, None, goalhub.BadRequest, "invalid_id", CTX_SESSION),
    ("operator in session id", {"context__session_id": {"$ne": None}}, None, goalhub.BadRequest, "invalid_id", CTX_SESSION),
    ("operator in trigger id", {"context__trigger_exclusive_goal_id": {"$ne": None}}, None, goalhub.BadRequest, "invalid_id", CTX_TRIGGER),
    ("trigger id a list", {"context__trigger_exclusive_goal_id": [TRIGGER_ID]}, None, goalhub.BadRequest, "invalid_id", CTX_TRIGGER),
]


@pytest.mark.parametrize("case, changes, user, error, code, field", EXCLUSIVE_REFUSALS, ids=[c[0] for c in EXCLUSIVE_REFUSALS])
def test_exclusive_refuses_each_broken_rule_and_writes_nothing(db, world, goal_types, case, changes, user, error, code, field):
    changes = {k: v.format(**world) if isinstance(v, str) else v for k, v in changes.items()}
    before = snapshot(db)
    with pytest.raises(error) as raised:
        goal_types["exclusive"].prepare(request(db, seed_body(**changes), user=user or SEED_STREAMER))
    assert (raised.value.status, raised.value.code, raised.value.field) == (error.status, code, field)
    assert snapshot(db) == before


def trigger_body(**overrides) -> dict:
    now = time.time()
    body = {"levels": [{"target": 60}], "context": {"session_id": SESSION_ID}, "nbf": round(now + 30, 3), "exp": round(now + 330, 3)}
    body.update(overrides)
    return body


def test_trigger_exclusive_is_a_countdown_that_is_active_only_once_nbf_has_passed(db, world, goal_types):
    prepare = goal_types["trigger_exclusive"].prepare
    before = snapshot(db)
    req = request(db, trigger_body())
    draft = prepare(req)
    assert snapshot(db) == before
    # exclusive_to defaults to the trigger's own id: a pair of its own in the session
    assert draft.document(req.goal_id) == {
        "_id": req.goal_id,
        "_cls": "TriggerExclusiveGoal",
        "active": False,
        "conditions": {"session_id": SESSION_ID, "exclusive_to": req.goal_id},
        "levels": [{"target": 60}],
        "nbf": req.body["nbf"],
        "exp": req.body["exp"],
        "context": {"type": "trigger_exclusive", "session_id": SESSION_ID, "exclusive_to": req.goal_id},
        "metadata": {"user_id": SEED_STREAMER},
    }
    assert draft.claims == []
    assert prepare(request(db, trigger_body(nbf=time.time() - 1))).active is True
    assert prepare(request(db, trigger_body(nbf=None))).active is True
    named = prepare(request(db, trigger_body(context={"session_id": SESSION_ID, "exclusive_to": "viewer-7"})))
    assert named.conditions["exclusive_to"] == named.context["exclusive_to"] == "viewer-7"


TRIGGER_REFUSALS = [
    ("exp missing", {"exp": None}, goalhub.BadRequest, "missing_field", "exp"),
    ("exp before nbf", {"exp": time.time() + 10, "nbf": time.time() + 20}, goalhub.BadRequest, "invalid_window", "exp"),
    ("exp passed", {"exp": time.time() - 10, "nbf": None}, goalhub.BadRequest, "invalid_window", "exp"),
    ("exp a string", {"exp": "later"}, goalhub.BadRequest, "invalid_number", "exp"),
    ("nbf a boolean", {"nbf": True}, goalhub.BadRequest, "invalid_number", "nbf"),
    ("levels target zero", {"levels": [{"target": 0}]}, goalhub.BadRequest, "invalid_target", "levels.0.target"),
    ("exclusive_to with a dot", {"context": {"session_id": SESSION_ID, "exclusive_to": "a.b"}}, goalhub.BadRequest, "invalid_exclusive_to", "context.exclusive_to"),
    ("exclusive_to an operator", {"context": {"session_id": SESSION_ID, "exclusive_to": {"$ne": None}}}, goalhub.BadRequest, "invalid_exclusive_to", "context.exclusive_to"),
    ("operator in session id", {"context": {"session_id": {"$ne": None}}}, goalhub.BadRequest, "invalid_id", CTX_SESSION),
    ("unknown session", {"context": {"session_id": str(ObjectId())}}, goalhub.NotFound, "session_not_found", CTX_SESSION),
    ("another streamer's session", {"context": {"session_id": "{other_streamers}"}}, goalhub.Forbidden, "session_not_owned", CTX_SESSION),
    ("ended session", {"context": {"session_id": "{ended}"}}, goalhub.Unprocessable, "session_ended", CTX_SESSION),
]


@pytest.mark.parametrize("case, overrides, error, code, field", TRIGGER_REFUSALS, ids=[c[0] for c in TRIGGER_REFUSALS])
def test_trigger_exclusive_refuses_each_broken_rule_and_writes_nothing(db, world, goal_types, case, overrides, error, code, field):
    overrides = copy.deepcopy(overrides)
    if isinstance(overrides.get("context", {}).get("session_id"), str):
        overrides["context"]["session_id"] = overrides["context"]["session_id"].format(**world)
    before = snapshot(db)
    with pytest.raises(error) as raised:
        goal_types["trigger_exclusive"].prepare(request(db, trigger_body(**overrides)))
    assert (raised.value.status, raised.value.code, raised.value.field) == (error.status, code, field)
    assert snapshot(db) == before
