"""The ``show`` and ``show_funding`` goal types: what ``prepare`` accepts, the draft it
returns, and each rule it refuses (error class, status, code, field), writing nothing."""

from __future__ import annotations

import time

import pytest
from bson import ObjectId

import goalhub
import goalhub.testing
from goalhub import CreateRequest

STREAMER = "67d9847d566d0435771a730c"  # seed 003's presence channel names this streamer
SESSION_ID = "67ceabecc82b8fd6cf63d6d6"  # ... and this session
CTX_SESSION, CTX_FUNDING = "context.session_id", "context.funding_goal_id"
DELETE = object()


@pytest.fixture
def goal_types(use_plugins):
    use_plugins("show")
    found = goalhub.testing.goal_types()
    assert {found["show"].goal_class, found["show_funding"].goal_class} == {"ShowGoal", "ShowFundingGoal"}
    return found


@pytest.fixture
def world(db):
    now = time.time()
    ids = {name: str(ObjectId()) for name in ("funding", "other_streamers", "ended", "other_session", "bound", "claimed", "trigger")}

    def session(_id, user=STREAMER, active=True):
        return {"_id": ObjectId(_id), "user": user, "active": active, "sources": [], "show_goal_pairs": []}

    def funding(_id, session_id=SESSION_ID, cls="ShowFundingGoal", **extra):
        return {
            "_id": ObjectId(_id),
            "_cls": cls,
            "active": False,
            "conditions": {"session_id": session_id},
            "levels": [{"target": 1000}],
            "nbf": now - 300,
            "exp": now - 1,
            "context": {"type": "show_funding", "session_id": session_id, **extra},
            "metadata": {"user_id": STREAMER},
        }

    db.sessions.insert_many([session(SESSION_ID), session(ids["other_streamers"], user=str(ObjectId())), session(ids["ended"], active=False)])
    claimed = funding(ids["claimed"])
    claimed["claims"] = {"show_goal": str(ObjectId())}
    db.goals.insert_many(
        [
            funding(ids["funding"]),
            funding(ids["other_session"], session_id=ids["other_streamers"]),
            funding(ids["bound"], show_goal_id=str(ObjectId())),
            claimed,
            funding(ids["trigger"], cls="TriggerExclusiveGoal"),
        ]
    )
    return ids


def snapshot(db) -> dict:
    return {name: sorted(map(repr, db[name].find())) for name in db.list_collection_names()}


def request(db, body, user=STREAMER) -> CreateRequest:
    return CreateRequest(goal_id=str(ObjectId()), user_id=user, body=body, db=db, now=time.time())


def show_body(world, **changes) -> dict:
    """Seed 003's payload: levels, context {funding_goal_id, session_id}, nbf, exp."""
    now = time.time()
    body = {
        "levels": [{"target": 500}],
        "context": {"funding_goal_id": world["funding"], "session_id": SESSION_ID},
        "nbf": round(now, 3),  # a float with milliseconds, as browsers send it
        "exp": round(now + 1800, 3),
    }
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is DELETE:
            del target[leaf]
        else:
            target[leaf] = value.format(**world) if isinstance(value, str) else value
    return body


def test_seed_003_show_body_is_accepted_and_drafted(db, world, goal_types):
    before = snapshot(db)
    req = request(db, show_body(world))
    draft = goal_types["show"].prepare(req)
    assert snapshot(db) == before  # prepare only reads
    assert draft.document(req.goal_id) == {
        "_id": req.goal_id,
        "_cls": "ShowGoal",
        "active": True,
        "conditions": {"session_id": SESSION_ID},
        "levels": [{"target": 500}],
        "nbf": req.body["nbf"],
        "exp": req.body["exp"],
        "context": {"type": "show", "funding_goal_id": world["funding"], "session_id": SESSION_ID},
        "metadata": {"user_id": STREAMER},
    }
    [claim] = draft.claims
    assert (claim.collection, claim.field, claim.error_field) == ("goals", "claims.show_goal", CTX_FUNDING)
    assert claim.filter == {"_id": ObjectId(world["funding"]), "context.show_goal_id": {"$exists": False}}
    # nbf and exp may be null
    assert goal_types["show"].prepare(request(db, show_body(world, nbf=None, exp=None))).exp is None


SHOW_REFUSALS = [
    ("unknown session", {"context__session_id": str(ObjectId())}, None, goalhub.NotFound, "session_not_found", CTX_SESSION),
    ("another streamer's session", {"context__session_id": "{other_streamers}"}, None, goalhub.Forbidden, "session_not_owned", CTX_SESSION),
    ("caller is another streamer", {}, str(ObjectId()), goalhub.Forbidden, "session_not_owned", CTX_SESSION),
    ("ended session", {"context__session_id": "{ended}"}, None, goalhub.Unprocessable, "session_ended", CTX_SESSION),
    ("unknown funding goal", {"context__funding_goal_id": str(ObjectId())}, None, goalhub.NotFound, "goal_not_found", CTX_FUNDING),
    ("funding goal of another session", {"context__funding_goal_id": "{other_session}"}, None, goalhub.Unprocessable, "goal_of_another_session", CTX_FUNDING),
    ("not a funding goal", {"context__funding_goal_id": "{trigger}"}, None, goalhub.Unprocessable, "wrong_goal_class", CTX_FUNDING),
    ("already bound", {"context__funding_goal_id": "{bound}"}, None, goalhub.Conflict, "already_bound", CTX_FUNDING),
    ("claimed by another request", {"context__funding_goal_id": "{claimed}"}, None, goalhub.Conflict, "already_bound", CTX_FUNDING),
    ("levels missing", {"levels": DELETE}, None, goalhub.BadRequest, "missing_field", "levels"),
    ("target zero", {"levels": [{"target": 0}]}, None, goalhub.BadRequest, "invalid_target", "levels.0.target"),
    ("target not a number", {"levels": [{"target": "500"}]}, None, goalhub.BadRequest, "invalid_number", "levels.0.target"),
    ("nbf a string", {"nbf": "now"}, None, goalhub.BadRequest, "invalid_number", "nbf"),
    ("exp in milliseconds", {"exp": 1746416602371}, None, goalhub.BadRequest, "invalid_timestamp", "exp"),
    ("exp before nbf", {"nbf": 1746416602.371, "exp": 1746416000.0}, None, goalhub.BadRequest, "invalid_window", "exp"),
    ("context missing", {"context": DELETE}, None, goalhub.BadRequest, "missing_field", "context"),
    ("funding id missing", {"context__funding_goal_id": DELETE}, None, goalhub.BadRequest, "missing_field", CTX_FUNDING),
    ("operator in funding id", {"context__funding_goal_id": {"$ne": None}}, None, goalhub.BadRequest, "invalid_id", CTX_FUNDING),
    ("operator in session id", {"context__session_id": {"$gt": ""}}, None, goalhub.BadRequest, "invalid_id", CTX_SESSION),
]


@pytest.mark.parametrize("case, changes, user, error, code, field", SHOW_REFUSALS, ids=[c[0] for c in SHOW_REFUSALS])
def test_show_refuses_each_broken_rule_and_writes_nothing(db, world, goal_types, case, changes, user, error, code, field):
    before = snapshot(db)
    with pytest.raises(error) as raised:
        goal_types["show"].prepare(request(db, show_body(world, **changes), user=user or STREAMER))
    assert (raised.value.status, raised.value.code, raised.value.field) == (error.status, code, field)
    assert snapshot(db) == before


def funding_body(**changes) -> dict:
    now = time.time()
    body = {"levels": [{"target": 1000}], "context": {"session_id": SESSION_ID}, "nbf": round(now + 60, 3), "exp": round(now + 360, 3)}
    body.update(changes)
    return body


def test_show_funding_is_a_countdown_that_is_active_only_once_nbf_has_passed(db, world, goal_types):
    prepare = goal_types["show_funding"].prepare
    before = snapshot(db)
    req = request(db, funding_body())
    draft = prepare(req)
    assert snapshot(db) == before
    assert draft.document(req.goal_id) == {
        "_id": req.goal_id,
        "_cls": "ShowFundingGoal",
        "active": False,
        "conditions": {"session_id": SESSION_ID},
        "levels": [{"target": 1000}],
        "nbf": req.body["nbf"],
        "exp": req.body["exp"],
        "context": {"type": "show_funding", "session_id": SESSION_ID},
        "metadata": {"user_id": STREAMER},
    }
    assert draft.claims == []
    assert prepare(request(db, funding_body(nbf=time.time() - 1))).active is True
    assert prepare(request(db, funding_body(nbf=None))).active is True


FUNDING_REFUSALS = [
    ("exp missing", {"exp": None}, goalhub.BadRequest, "missing_field", "exp"),
    ("exp passed", {"nbf": None, "exp": time.time() - 5}, goalhub.BadRequest, "invalid_window", "exp"),
    ("exp before nbf", {"nbf": time.time() + 100, "exp": time.time() + 50}, goalhub.BadRequest, "invalid_window", "exp"),
    ("levels empty", {"levels": []}, goalhub.BadRequest, "invalid_levels", "levels"),
    ("operator in session id", {"context": {"session_id": {"$ne": None}}}, goalhub.BadRequest, "invalid_id", CTX_SESSION),
    ("unknown session", {"context": {"session_id": str(ObjectId())}}, goalhub.NotFound, "session_not_found", CTX_SESSION),
]


@pytest.mark.parametrize("case, changes, error, code, field", FUNDING_REFUSALS, ids=[c[0] for c in FUNDING_REFUSALS])
def test_show_funding_refuses_each_broken_rule_and_writes_nothing(db, world, goal_types, case, changes, error, code, field):
    before = snapshot(db)
    with pytest.raises(error) as raised:
        goal_types["show_funding"].prepare(request(db, funding_body(**changes)))
    assert (raised.value.status, raised.value.code, raised.value.field) == (error.status, code, field)
    assert snapshot(db) == before


def test_show_funding_in_another_streamers_or_an_ended_session_is_refused(db, world, goal_types):
    for session_id, error in ((world["other_streamers"], goalhub.Forbidden), (world["ended"], goalhub.Unprocessable)):
        with pytest.raises(error):
            goal_types["show_funding"].prepare(request(db, funding_body(context={"session_id": session_id})))
