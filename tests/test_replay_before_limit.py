"""An idempotent replay is answered before the rate limit (issue 22, row 5): a client at its
limit that re-sends an accepted request with the same key gets the stored answer, never a
429 it could read as "not created" and retry under a new key."""

from __future__ import annotations

import time

import api_support
import pytest
from bson import ObjectId

from goalhub.api import create_app
from goalhub.auth import mint_token

STREAMER = "6800a9073e0c346531958b03"


@pytest.fixture
def client():
    return create_app().test_client()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR'])}", "Idempotency-Key": key}


def test_a_goal_replayed_at_the_limit_gets_its_stored_202(client, db, inline_plugin, monkeypatch):
    inline_plugin(api_support, "test-goal-types")
    monkeypatch.setenv("GOALHUB_RATE_LIMIT_GOALS", "1/hour")
    sid = ObjectId()
    db.sessions.insert_one({"_id": sid, "user": STREAMER, "active": True, "sources": []})
    body = {"levels": [{"target": 60}], "context": {"session_id": str(sid)}, "nbf": time.time(),
            "exp": time.time() + 60}
    first = client.post("/goals?type=trigger_exclusive", json=body, headers=auth("create-1"))
    assert first.status_code == 202, first.get_json()
    replay = client.post("/goals?type=trigger_exclusive", json=body, headers=auth("create-1"))
    assert replay.status_code == 202 and replay.get_json() == first.get_json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert client.post("/goals?type=trigger_exclusive", json=body, headers=auth("create-2")).status_code == 429


def test_a_session_replayed_at_the_limit_gets_its_stored_201(client, monkeypatch):
    monkeypatch.setenv("GOALHUB_RATE_LIMIT_SESSIONS", "1/hour")
    first = client.post("/sessions", json={}, headers=auth("start-1"))
    assert first.status_code == 201
    replay = client.post("/sessions", json={}, headers=auth("start-1"))
    assert replay.status_code == 201 and replay.get_json()["_id"] == first.get_json()["_id"]
    assert client.post("/sessions", json={}, headers=auth("start-2")).status_code == 429
