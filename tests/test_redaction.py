"""Redaction (goalhub.redaction): secrets in URLs, parameters and headers are removed from
what operators see; clients see an error's class and code only (issue 12, row 3).
"""

from __future__ import annotations

import pytest
from bson import ObjectId
from world import SECRET_URL, STREAMER, bearer

import goalhub
from goalhub import outbound, redaction, tasks


@pytest.mark.parametrize("text, secret", [
    (SECRET_URL, "hunter2"),
    (SECRET_URL, "abc123"),
    ("POST https://api.example.com/v1?api_key=K3Y&x=1 failed", "K3Y"),
    ("redis://:s3cret@cache:6379/0 refused", "s3cret"),
    ("headers={'Authorization': 'HMAC-SHA256 Credential=AKLT/2024/rtc, Signature=deadbeef'}", "deadbeef"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig rejected", "eyJhbGciOiJIUzI1NiJ9"),
    ("https://sink.example.com/hook?client_secret=zz9&signature=ab", "zz9"),
])
def test_redact_removes_url_credentials_secret_parameters_and_authorization(text, secret):
    redacted = redaction.redact(text)
    assert secret not in redacted and "***" in redacted


def test_redact_keeps_what_is_not_secret():
    text = "HTTPError: 503 Server Error for url: https://sink.example.com/hook?region=sg&goal=1"
    assert redaction.redact(text) == text


class Leaky:
    @goalhub.receiver("goal.created", "ExclusiveGoal")
    def leak(self, goal_id):
        import requests

        raise requests.HTTPError(f"401 Client Error: Unauthorized for url: {SECRET_URL}")


def test_clients_see_an_error_class_and_code_operators_the_redacted_detail(client, db, inline_plugin, drain,
                                                                           monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    inline_plugin(Leaky(), "leaky")
    gid = str(ObjectId())
    tasks.enqueue_create_goal({"_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {},
                               "levels": [{"target": 1}], "nbf": None, "exp": None, "context": {},
                               "metadata": {"user_id": STREAMER}})
    drain()
    seen = client.get(f"/goals/{gid}", headers=bearer()).get_json()
    failed = next(o for o in seen["outcomes"] if o["receiver"] == "leak")
    assert failed["status"] == "failed"
    assert failed["error_class"] == "HTTPError" and failed["error_code"] == "http_error"
    assert "error" not in failed and "traceback" not in failed
    assert "sink.example.com" not in str(seen)
    stored = db.outcomes.find_one({"goal_id": gid, "receiver": "leak"})
    assert "HTTPError: 401 Client Error" in stored["error"] and "https://***@sink.example.com" in stored["error"]
    for secret in ("hunter2", "abc123"):
        assert secret not in stored["error"] and secret not in stored["traceback"]


def test_an_outbound_records_error_is_redacted(db):
    def send():
        raise ConnectionError(f"cannot reach {SECRET_URL}")

    with pytest.raises(ConnectionError):
        outbound.send_once("sink", "k1", {"a": 1}, send, goal_id="g")
    record = db.outbound.find_one({"_id": "sink:k1"})
    assert "hunter2" not in record["error"] and "abc123" not in record["error"] and "***" in record["error"]


