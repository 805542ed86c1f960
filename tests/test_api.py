"""The HTTP API through Flask's test client: every route, the error model, and the promise
that a refused request writes nothing (the store and the queues are compared before and
after, not only the status). Goal types come from the inline plugin ``api_support``."""

from __future__ import annotations

import base64
import copy
import json
import os
import threading
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import api_support
import pytest
import requests
from bson import ObjectId
from world import SEED_000_HEADERS

from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.connection import get_redis
from goalhub.queues import all_queues, get_queue, get_scheduler

STREAMER = "6800a9073e0c346531958b03"  # the sub of seed 000's token
OTHER = "67d9847d566d0435771a730c"
NE = {"$ne": None}
COLLECTIONS = ("goals", "sessions", "requests", "outcomes", "outbound")


@pytest.fixture
def world(db, inline_plugin):
    """A streamer with a live session whose trigger goal's countdown has ended, and the rest."""
    inline_plugin(api_support, "test-goal-types")
    now = time.time()

    def session(user: str, active: bool = True) -> str:
        _id = ObjectId()
        db.sessions.insert_one({"_id": _id, "user": user, "active": active,
                                "sources": [{"room_id": "room-1", "task_id": "task-1"}],
                                "exclusive_goal_pairs": {}, "show_goal_pairs": [], "started_at": now - 600})
        return str(_id)

    def trigger(session_id: str, user: str, exp: float, **context: Any) -> str:
        _id = ObjectId()
        db.goals.insert_one({"_id": _id, "_cls": "TriggerExclusiveGoal", "active": exp > now,
                             "conditions": {"session_id": session_id, "exclusive_to": "room"},
                             "levels": [{"target": 60}], "nbf": now - 300, "exp": exp,
                             "context": {"type": "trigger_exclusive", "session_id": session_id,
                                         "exclusive_to": "room", **context},
                             "metadata": {"user_id": user}, "created_at": now - 300})
        return str(_id)

    w = SimpleNamespace(now=now, session=session(STREAMER), ended_session=session(STREAMER, active=False),
                        other_session=session(OTHER))
    w.trigger = trigger(w.session, STREAMER, now - 10)
    w.running_trigger = trigger(w.session, STREAMER, now + 3600)
    w.bound_trigger = trigger(w.session, STREAMER, now - 10, exclusive_goal_id=str(ObjectId()))
    w.other_trigger = trigger(w.other_session, OTHER, now - 10)
    w.token = mint_token(STREAMER, ["PAID", "HUMAN", "CREATOR"])
    w.other_token = mint_token(OTHER)
    return w


@pytest.fixture
def client():
    return create_app().test_client()


def exclusive_body(w) -> dict[str, Any]:
    return {"levels": [{"target": 300}],
            "context": {"session_id": w.session, "trigger_exclusive_goal_id": w.trigger},
            "nbf": round(w.now + 0.371, 3)}


def snapshot(db) -> dict[str, Any]:
    """Everything a request could have written: every document, every Redis key, every job."""
    names = set(COLLECTIONS) | set(db.list_collection_names())
    redis = get_redis()
    return {
        "documents": {name: sorted(map(repr, db[name].find())) for name in sorted(names)},
        "redis_keys": sorted(redis.keys("*")),
        "jobs": [queue.job_ids for queue in all_queues()],
        "scheduled": [job.id for job in get_scheduler().get_jobs()],
    }


def send(client, w, *, method="POST", path="/goals?type=exclusive", body=None, raw=None,
         content_type="application/json", token="streamer", headers=None):
    headers = dict(headers or {})
    token = {"streamer": w.token, "other": w.other_token}.get(token, token)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    kwargs = {"headers": headers}
    if data is not None:
        kwargs.update(data=data, content_type=content_type)
    return client.open(path, method=method, **kwargs)


def changed(w, path: str, value: Any = None, *, drop: bool = False) -> dict[str, Any]:
    """The seed body with the field at dotted ``path`` set to ``value`` (or removed)."""
    body = copy.deepcopy(exclusive_body(w))
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if drop:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


def countdown(w, **changes: Any) -> dict[str, Any]:
    body = {"levels": [{"target": 60}], "context": {"session_id": w.session, "exclusive_to": "room"},
            "nbf": w.now + 5, "exp": w.now + 65}
    body.update(changes)
    return body


def seed_dupes(w) -> bytes:
    return (f'{{"levels":[{{"target":300}}],"levels":[{{"target":1}}],"context":{{"session_id":"{w.session}",'
            f'"trigger_exclusive_goal_id":"{w.trigger}"}}}}').encode()


def raw_target(w, literal: str) -> bytes:
    return (f'{{"levels":[{{"target":{literal}}}],"context":{{"session_id":"{w.session}","trigger_exclusive_goal_id":"{w.trigger}"}}}}').encode()


# (name, request, status, error code)
BAD_REQUESTS = [
    ("malformed json", lambda w: dict(raw=b'{"levels": ['), 400, "malformed_json"),
    ("empty body", lambda w: dict(raw=b""), 400, "malformed_json"),
    ("not utf-8", lambda w: dict(raw=b'{"a": "\xff"}'), 400, "malformed_json"),
    ("wrong content type", lambda w: dict(body=exclusive_body(w), content_type="text/plain"), 415,
     "unsupported_media_type"),
    ("form body", lambda w: dict(raw=b"levels=1", content_type="application/x-www-form-urlencoded"), 415,
     "unsupported_media_type"),
    ("not an object", lambda w: dict(body=[exclusive_body(w)]), 400, "not_an_object"),
    ("a string", lambda w: dict(raw=b'"levels"'), 400, "not_an_object"),
    ("duplicate keys", lambda w: dict(raw=seed_dupes(w)), 400, "duplicate_key"),
    ("too deep", lambda w: dict(body={**exclusive_body(w), "x": json.loads("[" * 40 + "]" * 40)}), 400,
     "too_deep"),
    ("missing levels", lambda w: dict(body=changed(w, "levels", drop=True)), 400, "missing_field"),
    ("missing context", lambda w: dict(body=changed(w, "context", drop=True)), 400, "missing_field"),
    ("missing session id", lambda w: dict(body=changed(w, "context.session_id", drop=True)), 400,
     "missing_field"),
    ("missing trigger id", lambda w: dict(body=changed(w, "context.trigger_exclusive_goal_id", drop=True)),
     400, "missing_field"),
    ("levels not a list", lambda w: dict(body=changed(w, "levels", "300")), 400, "invalid_levels"),
    ("levels empty", lambda w: dict(body=changed(w, "levels", [])), 400, "invalid_levels"),
    ("level not an object", lambda w: dict(body=changed(w, "levels.0", 300)), 400, "invalid_type"),
    ("context not an object", lambda w: dict(body=changed(w, "context", "x")), 400, "invalid_type"),
    ("zero target", lambda w: dict(body=changed(w, "levels.0.target", 0)), 400, "invalid_target"),
    ("negative target", lambda w: dict(body=changed(w, "levels.0.target", -300)), 400, "invalid_target"),
    ("string target", lambda w: dict(body=changed(w, "levels.0.target", "300")), 400, "invalid_number"),
    ("boolean target", lambda w: dict(body=changed(w, "levels.0.target", True)), 400, "invalid_number"),
    ("null target", lambda w: dict(body=changed(w, "levels.0.target", None)), 400, "missing_field"),
    ("NaN target", lambda w: dict(raw=raw_target(w, "NaN")), 400, "malformed_json"),
    ("Infinity target", lambda w: dict(raw=raw_target(w, "Infinity")), 400, "malformed_json"),
    ("1e400 target", lambda w: dict(raw=raw_target(w, "1e400")), 400, "invalid_number"),
    ("huge target", lambda w: dict(body=changed(w, "levels.0.target", 10**15)), 400, "invalid_target"),
    ("5000-digit target", lambda w: dict(raw=raw_target(w, "9" * 5000)), 400, "malformed_json"),
    ("operator target", lambda w: dict(body=changed(w, "levels.0.target", {"$gt": 0})), 400, "invalid_number"),
    ("string nbf", lambda w: dict(body=changed(w, "nbf", "1746416602.371")), 400, "invalid_number"),
    ("nbf in milliseconds", lambda w: dict(body=changed(w, "nbf", 1746416602371)), 400, "invalid_timestamp"),
    ("exp before nbf", lambda w: dict(path="/goals?type=trigger_exclusive", body=countdown(w, exp=w.now)), 400,
     "invalid_window"),
    ("exp not a number", lambda w: dict(path="/goals?type=trigger_exclusive", body=countdown(w, exp=[1])), 400,
     "invalid_number"),
    ("$ne in session id", lambda w: dict(body=changed(w, "context.session_id", NE)), 400, "invalid_id"),
    ("$ne in trigger id", lambda w: dict(body=changed(w, "context.trigger_exclusive_goal_id", NE)), 400,
     "invalid_id"),
    ("$ne string in id", lambda w: dict(body=changed(w, "context.session_id", '{"$ne": null}')), 400,
     "invalid_id"),
    ("$where in id", lambda w: dict(body=changed(w, "context.session_id", {"$where": "1"})), 400, "invalid_id"),
    ("id list", lambda w: dict(body=changed(w, "context.session_id", [w.session])), 400, "invalid_id"),
    ("short id", lambda w: dict(body=changed(w, "context.session_id", w.session[:23])), 400, "invalid_id"),
    ("$ne in countdown session", lambda w: dict(path="/goals?type=trigger_exclusive",
                                                body=countdown(w, context={"session_id": NE})), 400, "invalid_id"),
    ("$ne in goal url", lambda w: dict(method="GET", path="/goals/%7B%22%24ne%22%3A%20null%7D"), 400,
     "invalid_id"),
    ("$ne in end goal url", lambda w: dict(path="/goals/%7B%22%24ne%22%3Anull%7D/end"), 400, "invalid_id"),
    ("$ne in session url", lambda w: dict(method="GET", path="/sessions/%7B%22%24ne%22%3Anull%7D"), 400,
     "invalid_id"),
    ("$ne in end session url", lambda w: dict(path="/sessions/%7B%22%24ne%22%3Anull%7D/end"), 400,
     "invalid_id"),
    ("$ne in source room", lambda w: dict(path="/sessions", body={"sources": [{"room_id": NE, "task_id": "t"}]}),
     400, "invalid_type"),
    ("sources not a list", lambda w: dict(path="/sessions", body={"sources": {"room_id": "r"}}), 400,
     "invalid_type"),
    ("source missing task", lambda w: dict(path="/sessions", body={"sources": [{"room_id": "r"}]}), 400,
     "missing_field"),
    ("source empty room", lambda w: dict(path="/sessions", body={"sources": [{"room_id": "", "task_id": "t"}]}),
     400, "invalid_source_id"),
    ("unknown type", lambda w: dict(path="/goals?type=nope", body=exclusive_body(w)), 400, "unknown_goal_type"),
    ("no type", lambda w: dict(path="/goals?lang=zh-hant", body=exclusive_body(w)), 400, "missing_goal_type"),
    ("two types", lambda w: dict(path="/goals?type=exclusive&goal_type=trigger_exclusive",
                                 body=exclusive_body(w)), 400, "ambiguous_goal_type"),
    ("oversized body", lambda w: dict(body={**exclusive_body(w), "pad": "x" * 70_000}), 413,
     "payload_too_large"),
    ("bad request id", lambda w: dict(body=exclusive_body(w), headers={"x-request-id": "x" * 300}), 400,
     "invalid_request_id"),
    ("no token", lambda w: dict(body=exclusive_body(w), token=None), 401, "token_missing"),
    ("not a jwt", lambda w: dict(body=exclusive_body(w), token="not.a.jwt"), 401, "token_malformed"),
    ("forged signature", lambda w: dict(body=exclusive_body(w), token=w.token[:-4] + "AAAA"), 401,
     "token_signature"),
    ("seed token, unknown key", lambda w: dict(body=exclusive_body(w), token=SEED_TOKEN), 401,
     "token_kid_unknown"),
    ("expired token", lambda w: dict(body=exclusive_body(w),
                                     token=mint_token(STREAMER, extra={"exp": int(w.now) - 60})), 401,
     "token_expired"),
    ("missing CREATOR scope", lambda w: dict(body=exclusive_body(w), token=mint_token(STREAMER, ["PAID"])), 403,
     "scope_missing"),
    ("no scope for sessions", lambda w: dict(path="/sessions", body={}, token=mint_token(STREAMER, [])), 403,
     "scope_missing"),
    ("another streamer's session", lambda w: dict(body=changed(w, "context.session_id", w.other_session)), 403,
     "session_not_owned"),
    ("another streamer's trigger", lambda w: dict(body=changed(w, "context.trigger_exclusive_goal_id",
                                                               w.other_trigger)), 404, "trigger_not_found"),
    ("ended session", lambda w: dict(body=changed(w, "context.session_id", w.ended_session)), 422,
     "session_ended"),
    ("unknown session", lambda w: dict(body=changed(w, "context.session_id", str(ObjectId()))), 404,
     "session_not_found"),
    ("countdown still running", lambda w: dict(body=changed(w, "context.trigger_exclusive_goal_id",
                                                            w.running_trigger)), 422, "countdown_running"),
    ("trigger already bound", lambda w: dict(body=changed(w, "context.trigger_exclusive_goal_id",
                                                          w.bound_trigger)), 409, "already_bound"),
    ("read another's session", lambda w: dict(method="GET", path=f"/sessions/{w.other_session}"), 403,
     "session_not_owned"),
    ("end another's session", lambda w: dict(path=f"/sessions/{w.other_session}/end"), 403, "session_not_owned"),
    ("read another's goal", lambda w: dict(method="GET", path=f"/goals/{w.other_trigger}"), 403,
     "goal_not_owned"),
    ("end another's goal", lambda w: dict(path=f"/goals/{w.other_trigger}/end"), 403, "goal_not_owned"),
    ("end an unknown goal", lambda w: dict(path=f"/goals/{ObjectId()}/end"), 404, "goal_not_found"),
    ("end an ended session", lambda w: dict(path=f"/sessions/{w.ended_session}/end"), 409, "session_ended"),
    ("end without scope", lambda w: dict(path=f"/goals/{w.trigger}/end", token=mint_token(STREAMER, [])), 403,
     "scope_missing"),
    ("unknown route", lambda w: dict(method="GET", path="/nope"), 404, "not_found"),
    ("wrong method", lambda w: dict(method="DELETE", path="/goals"), 405, "method_not_allowed"),
]

# Seed 000's token: right shape, but its key (kid 0c93de83) is not configured here.
SEED_TOKEN = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiIsImtpZCI6IjBjOTNkZTgzIn0.eyJzdWIiOiI2ODAwYTkwNzNlMGMzNDY1MzE5NThiMDMiLCJqdGki"
    "OiJmc2xORDQ1RGV4Y3I3S0lpIiwiaXNzIjoiYXBpLnN3YWcubGl2ZSIsImF1ZCI6ImFwaS5zd2FnLmxpdmUiLCJpYXQiOjE3NDY0MTU4NTQsImV4"
    "cCI6MTc0NjQxOTQ1NCwidmVyc2lvbiI6Miwic2NvcGVzIjpbIlBBSUQiLCJIVU1BTiIsIkNSRUFUT1IiXSwibWV0YWRhdGEiOnsiZmluZ2VycHJp"
    "bnQiOiJkMjc5M2RkNCIsImZsYXZvciI6InN3YWcubGl2ZSIsIm9yaWdpbmFsIjp7ImlhdCI6MTc0NTgwNzc5OSwibWV0aG9kIjoicGFzc3dvcmQi"
    "fX19.c2lnbmF0dXJlLXJlbW92ZWQtc2lnbmF0dXJlLXJlbW92ZWQ"
)


@pytest.mark.parametrize("name, build, status, code", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_a_bad_request_is_refused_and_writes_nothing(client, world, db, name, build, status, code):
    request = build(world)
    # With an idempotency key too: a refusal must not leave its request record behind.
    request.setdefault("headers", {"x-request-id": f"bad-{name}"})
    before = snapshot(db)
    response = send(client, world, **request)
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(db) == before


def test_error_fields_name_the_offending_input(client, world):
    response = send(client, world, body=changed(world, "levels.0.target", -1))
    assert response.get_json()["error"]["field"] == "levels.0.target"
    response = send(client, world, body=changed(world, "context.trigger_exclusive_goal_id", NE))
    assert response.get_json()["error"]["field"] == "context.trigger_exclusive_goal_id"
    response = send(client, world, path="/goals?type=nope", body={})
    error = response.get_json()["error"]
    assert error["field"] == "type" and "exclusive, trigger_exclusive" in error["message"]


def test_seed_000_request_is_accepted_as_written(client, world, db, drain):
    """Seed 000's headers, query and body (float nbf), with a token of the same shape."""
    headers = dict(SEED_000_HEADERS)
    raw = (f'{{"levels":[{{"target":300}}],"context":{{"session_id":"{world.session}","trigger_exclusive_goal_id":"{world.trigger}"}},'
           '"nbf":1746416602.371}').encode()
    response = send(client, world, path="/goals?lang=zh-hant&type=exclusive", raw=raw, headers=headers)
    assert response.status_code == 202, response.get_json()
    goal_id = response.get_json()["goal_id"]
    assert response.headers["Location"] == f"/goals/{goal_id}"
    # Claimed at once: the trigger is bound before any worker ran.
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == goal_id
    assert get_queue().count == 1

    drain()
    goal = client.get(f"/goals/{goal_id}", headers={"Authorization": f"Bearer {world.token}"}).get_json()
    assert goal["_id"] == goal_id
    assert goal["_cls"] == "ExclusiveGoal" and goal["active"] is True
    assert goal["nbf"] == 1746416602.371 and goal["exp"] is None
    assert goal["conditions"] == {"session_id": world.session, "exclusive_to": "room"}
    assert goal["context"] == {"type": "exclusive", "exclusive_to": "room", "session_id": world.session,
                               "trigger_exclusive_goal_id": world.trigger}
    assert goal["metadata"] == {"user_id": STREAMER}
    # The core's lifecycle receiver ran for it (ExclusiveGoal is scheduled at nbf).
    [outcome] = [o for o in goal["outcomes"] if o["receiver"] == "schedule_lifecycle_tasks"]
    assert outcome["status"] == "ok" and outcome["event"] == "goal.created"
    assert "arguments" not in outcome and "traceback" not in outcome


@pytest.mark.parametrize("path", ["/goals?type=exclusive", "/goal?type=exclusive", "/goals?goal_type=exclusive",
                                  "/goal?goal_type=exclusive&lang=en"])
def test_both_spellings_of_the_route_and_the_type(client, world, path):
    response = send(client, world, path=path, body=exclusive_body(world))
    assert response.status_code == 202


def test_same_request_id_returns_the_first_answer_and_creates_nothing_new(client, world, db, drain):
    headers = {"x-request-id": "b3c220d5-02de-4a9b-91ae-0bd9643af014"}
    first = send(client, world, body=exclusive_body(world), headers=headers)
    assert first.status_code == 202
    after_first = snapshot(db)
    again = send(client, world, body=exclusive_body(world), headers=headers)
    assert (again.status_code, again.get_json()) == (202, first.get_json())
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert snapshot(db) == after_first
    assert get_queue().count == 1

    # Idempotency-Key works the same; keys are per caller.
    drain()
    assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    same_key_other_caller = send(client, world, token="other", headers=headers,
                                 body={**exclusive_body(world), "context": {"session_id": world.other_session,
                                                                            "trigger_exclusive_goal_id":
                                                                                world.other_trigger}})
    assert same_key_other_caller.status_code == 202
    assert same_key_other_caller.get_json()["goal_id"] != first.get_json()["goal_id"]


def test_a_request_id_reused_for_another_request_is_refused(client, world, db):
    headers = {"Idempotency-Key": "k-1"}
    assert send(client, world, body=exclusive_body(world), headers=headers).status_code == 202
    before = snapshot(db)
    other = send(client, world, path="/goals?type=trigger_exclusive", body=countdown(world), headers=headers)
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "request_id_reused"
    assert snapshot(db) == before


def test_a_request_still_in_progress_is_a_conflict(client, world, db):
    from goalhub.api.idempotency import fingerprint

    digest = fingerprint("create_goal", "exclusive", exclusive_body(world))
    db.requests.insert_one({"_id": f"{STREAMER}:k-2", "user_id": STREAMER, "key": "k-2", "fingerprint": digest,
                            "state": "pending", "created_at": time.time()})
    before = snapshot(db)
    response = send(client, world, body=exclusive_body(world), headers={"x-request-id": "k-2"})
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "request_in_progress"
    assert snapshot(db) == before


def test_redis_down_is_503_releases_the_claim_and_a_retry_succeeds(client, world, db, monkeypatch, tmp_path):
    headers = {"x-request-id": "retry-me"}
    before = snapshot(db)
    live_url = os.environ["GOALHUB_REDIS_URL"]
    monkeypatch.setenv("GOALHUB_REDIS_URL", f"unix://{tmp_path / 'no-redis.sock'}")
    response = send(client, world, body=exclusive_body(world), headers=headers)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "queue_unavailable"
    trigger = db.goals.find_one({"_id": ObjectId(world.trigger)})
    assert "exclusive_goal_id" not in trigger["context"]
    assert db.requests.count_documents({}) == 0
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").get_json()["error"]["field"] == "redis"

    monkeypatch.setenv("GOALHUB_REDIS_URL", live_url)  # Redis is back
    assert snapshot(db) == before
    retry = send(client, world, body=exclusive_body(world), headers=headers)
    assert retry.status_code == 202
    assert get_queue().count == 1
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == \
        retry.get_json()["goal_id"]


def test_a_failing_goal_type_is_a_json_500_without_details(client, world, db, inline_plugin):
    import goalhub
    from goalhub.goaltypes import GoalType

    def broken(request):
        raise KeyError("secret internals")

    class Broken:
        @goalhub.hookimpl
        def goal_types(self):
            return [GoalType("broken", "BrokenGoal", broken)]

    inline_plugin(Broken(), "broken")
    before = snapshot(db)
    response = send(client, world, path="/goals?type=broken", body={}, headers={"x-request-id": "r"})
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal", "message": "internal error"}}
    assert snapshot(db) == before


def test_sessions_start_read_and_end_their_goals(client, world, db, drain):
    auth = {"Authorization": f"Bearer {world.token}"}
    platform = {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR', 'PLATFORM'])}"}
    response = client.post("/sessions", json={"sources": [{"room_id": "r1", "task_id": "t1"}]}, headers=platform)
    assert response.status_code == 201
    session = response.get_json()
    assert response.headers["Location"] == f"/sessions/{session['_id']}"
    assert session["user"] == STREAMER and session["active"] is True
    assert session["sources"] == [{"room_id": "r1", "task_id": "t1"}]
    # The fields of the installed goal types (here the test ones), and no other plugin's.
    assert session["exclusive_goal_pairs"] == {} and "show_goal_pairs" not in session
    assert client.get(f"/sessions/{session['_id']}", headers=auth).get_json() == session
    # A body is optional.
    assert client.post("/sessions", headers=auth).status_code == 201

    goal = client.post("/goals?type=trigger_exclusive", headers=auth,
                       json=countdown(world, context={"session_id": session["_id"]}))
    assert goal.status_code == 202
    drain()
    goal_id = goal.get_json()["goal_id"]

    ended = client.post(f"/sessions/{session['_id']}/end", headers=auth)
    assert ended.status_code == 200
    assert ended.get_json()["active"] is False and ended.get_json()["ending_goals"] == [goal_id]
    drain()
    stored = db.goals.find_one({"_id": ObjectId(goal_id)})
    assert stored["active"] is False and stored["end_reason"] == "session_ended"
    assert client.post(f"/sessions/{session['_id']}/end", headers=auth).status_code == 409
    # An ended session takes no new goals.
    late = client.post("/goals?type=trigger_exclusive", headers=auth,
                       json=countdown(world, context={"session_id": session["_id"]}))
    assert late.status_code == 422 and late.get_json()["error"]["code"] == "session_ended"


def test_ending_a_session_while_redis_is_down_changes_nothing(client, world, db, monkeypatch, tmp_path):
    before = snapshot(db)
    live_url = os.environ["GOALHUB_REDIS_URL"]
    monkeypatch.setenv("GOALHUB_REDIS_URL", f"unix://{tmp_path / 'no-redis.sock'}")
    response = send(client, world, path=f"/sessions/{world.session}/end")
    assert response.status_code == 503
    monkeypatch.setenv("GOALHUB_REDIS_URL", live_url)
    assert snapshot(db) == before


def test_ending_a_goal_sends_the_end_once(client, world, db, drain):
    response = send(client, world, path=f"/goals/{world.running_trigger}/end")
    assert response.status_code == 202 and response.get_json()["goal_id"] == world.running_trigger
    drain()
    goal = db.goals.find_one({"_id": ObjectId(world.running_trigger)})
    assert goal["active"] is False and goal["end_reason"] == "ended"
    again = send(client, world, path=f"/goals/{world.running_trigger}/end")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "goal_ended"


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["redis"] == "ok"


def test_readiness_names_a_store_that_is_down(client, monkeypatch):
    monkeypatch.setenv("GOALHUB_MONGO_URI", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["down"] == ["store"]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_rq_dashboard_needs_credentials(client, world, monkeypatch):
    # Unconfigured: no password opens it.
    refused = client.get("/rq/")
    assert refused.status_code == 401
    assert {c.split()[0] for c in refused.headers.getlist("WWW-Authenticate")} == {"Bearer", "Basic"}
    assert client.get("/rq/", headers=basic("", "")).status_code == 403
    assert client.get("/rq/0/data/queues.json").status_code == 401
    assert client.get("/rq/static/js/dashboard.js").status_code == 401

    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", "ops")
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", "a long dashboard password")
    assert client.get("/rq/", headers=basic("ops", "wrong")).status_code == 401
    assert client.get("/rq/", headers=basic("ops", "a long dashboard password")).status_code == 200
    data = client.get("/rq/0/data/queues.json", headers=basic("ops", "a long dashboard password"))
    assert data.status_code == 200
    assert {"goalhub", "goalhub-lifecycle"} <= {queue["name"] for queue in data.get_json()["queues"]}

    # A bearer token needs ADMIN.
    assert client.get("/rq/", headers={"Authorization": f"Bearer {world.token}"}).status_code == 403
    admin = {"Authorization": f"Bearer {mint_token(STREAMER, ['ADMIN'])}"}
    assert client.get("/rq/0/data/workers.json", headers=admin).status_code == 200
    # A cross-site action riding on the browser's Basic credentials is refused.
    csrf = client.post("/rq/queue/goalhub/queued/empty",
                       headers={**basic("ops", "a long dashboard password"), "Origin": "https://evil.example"})
    assert csrf.status_code == 403


def test_get_goal_reads_the_goal_and_its_outcomes(client, world, db, drain):
    auth = {"Authorization": f"Bearer {world.token}"}
    goal_id = client.post("/goals?type=trigger_exclusive", headers=auth, json=countdown(world)).get_json()["goal_id"]
    # Not a goal until the job runs: meanwhile it reads as being created, to its owner only,
    # from its accepted record in the store (goalhub.outbox), not from the job.
    creating = client.get(f"/goals/{goal_id}", headers=auth)
    assert creating.status_code == 200
    accepted_at = db.accepted.find_one({"_id": ObjectId(goal_id)})["accepted_at"]
    assert creating.get_json() == {"_id": goal_id, "_cls": "TriggerExclusiveGoal", "state": "creating",
                                   "accepted_at": accepted_at, "outcomes": [], "events": []}
    other = {"Authorization": f"Bearer {mint_token(OTHER, ['CREATOR'])}"}
    assert client.get(f"/goals/{goal_id}", headers=other).status_code == 403
    assert client.get(f"/goals/{ObjectId()}", headers=auth).status_code == 404
    drain()
    goal = client.get(f"/goals/{goal_id}", headers=auth).get_json()
    assert goal["_cls"] == "TriggerExclusiveGoal" and goal["exp"] == pytest.approx(world.now + 65)
    assert {o["receiver"]: o["status"] for o in goal["outcomes"]} == {"schedule_lifecycle_tasks": "ok"}
    [event] = goal["events"]
    assert event["event"] == "goal.created" and event["receivers"] == ["goalhub.lifecycle.schedule_lifecycle_tasks"]
    assert client.get(f"/goals/{goal_id}").status_code == 401
    admin = {"Authorization": f"Bearer {mint_token(OTHER, ['ADMIN'])}"}
    assert client.get(f"/goals/{goal_id}", headers=admin).status_code == 200


# --- through a real server ------------------------------------------------------------------


@pytest.fixture
def api_server(tmp_path, world):
    """The API server with 2 processes x 8 threads, the inline goal types loaded by module name."""
    env = api_support.process_env(GOALHUB_PLUGINS="api_support", GOALHUB_TEST_PREPARE_DELAY="0.3")
    server, base = api_support.start_api(env, tmp_path, workers=2, threads=8)
    yield base
    server.stop()


def test_concurrent_requests_for_one_trigger_create_exactly_one_goal(api_server, world, db):
    callers = 40
    barrier = threading.Barrier(callers)
    statuses: list[int] = []
    bodies: list[dict] = []
    lock = threading.Lock()

    def fire(index: int) -> None:
        barrier.wait()
        response = requests.post(f"{api_server}/goals?type=exclusive", json=exclusive_body(world), timeout=30,
                                 headers={"Authorization": f"Bearer {world.token}", "x-request-id": f"c-{index}"})
        with lock:
            statuses.append(response.status_code)
            bodies.append(response.json())

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Counter(statuses) == {202: 1, 409: callers - 1}, Counter(statuses)
    [winner] = [body["goal_id"] for body in bodies if "goal_id" in body]
    assert {body["error"]["code"] for body in bodies if "error" in body} == {"already_bound"}
    assert get_queue().count == 1
    [job] = get_queue().get_jobs()
    assert job.args == (winner,)
    assert db.goals.find_one({"_id": ObjectId(world.trigger)})["context"]["exclusive_goal_id"] == winner
    # The losers left no accepted records and no request records.
    assert [str(r["_id"]) for r in db.accepted.find()] == [winner]
    assert db.requests.count_documents({}) == 1
