"""The snapshot plugin: StopSnapshot per source when an exclusive goal starts, StartSnapshot when it ends.

Goals go through the real path: ``create_goal``/``end_goal`` jobs, the dispatcher, one RQ
job per receiver (SimpleWorker), the embedded Redis and store. The real RTC client talks
to a local HTTP server that checks the signature the way the OpenAPI does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from bson import ObjectId
from goalhub_snapshot import receivers, rtc

import goalhub
from goalhub.testing import create_goal, end_goal, enqueue_create_goal

GOAL_CLASSES = ["ExclusiveGoal", "TriggerExclusiveGoal", "ShowGoal", "ShowFundingGoal", "KaraokeGoal", "TriggerPrivateGoal"]
SOURCES = [{"room_id": "room-1", "task_id": "snap-1"}, {"room_id": "room-2", "task_id": "snap-2"}]
ACCESS_KEY = "AKLTtestaccesskey"
SECRET_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHM="


@pytest.fixture(autouse=True)
def snapshot_plugin(use_plugins):
    use_plugins("snapshot")


def make_session(db, sources=SOURCES) -> str:
    session_id = ObjectId()
    db.sessions.insert_one({"_id": session_id, "user": str(ObjectId()), "active": True, "sources": list(sources)})
    return str(session_id)


def goal_document(cls: str, session_id: str) -> dict[str, Any]:
    conditions: dict[str, Any] = {"session_id": session_id}
    if cls in ("ExclusiveGoal", "TriggerExclusiveGoal"):
        conditions["exclusive_to"] = "fans"
    return {
        "_id": str(ObjectId()),
        "_cls": cls,
        "active": True,
        "conditions": conditions,
        "levels": [{"target": 300}],
        "nbf": None,
        "exp": None,
        "context": {"type": cls, "session_id": session_id},
        "metadata": {"user_id": str(ObjectId())},
    }


def rtc_calls(goal_id: str) -> list[tuple[str, str, str]]:
    return [
        (r["payload"]["action"], r["payload"]["body"]["RoomId"], r["payload"]["body"]["TaskId"])
        for r in goalhub.outbound_records("rtc", goal_id)
    ]


def outcome(db, event: str, goal_id: str, receiver: str) -> dict[str, Any]:
    return db.outcomes.find_one({"event": event, "goal_id": goal_id, "receiver": receiver})


# -- a local RTC OpenAPI ---------------------------------------------------------------


class RtcServer:
    """Records every request; answers like the OpenAPI (HTTP 200, errors in ResponseMetadata)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []  # answered, one per request, before succeeding
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                server.requests.append(
                    {"method": "POST", "path": parts.path, "query": query, "headers": dict(self.headers.items()), "body": body}
                )
                metadata: dict[str, Any] = {"RequestId": f"req-{len(server.requests)}", "Action": query.get("Action"),
                                            "Version": query.get("Version"), "Service": "rtc", "Region": "ap-singapore-1"}
                answer: dict[str, Any] = {"ResponseMetadata": metadata}
                if server.errors:
                    metadata["Error"] = server.errors.pop(0)
                else:
                    answer["Result"] = "ok"
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rtc_server(monkeypatch) -> Iterator[RtcServer]:
    server = RtcServer()
    monkeypatch.setenv("GOALHUB_RTC_ENDPOINT", server.url)
    monkeypatch.setenv("GOALHUB_RTC_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("GOALHUB_RTC_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("GOALHUB_RTC_APP_ID", "app-661e")
    yield server
    server.close()


AUTHORIZATION = re.compile(
    r"HMAC-SHA256 Credential=(?P<ak>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def recompute_signature(request: dict[str, Any], secret: str) -> tuple[str, re.Match[str]]:
    """The server side of the OpenAPI's HMAC-SHA256 signature, from the request as received."""
    headers = {name.lower(): value for name, value in request["headers"].items()}
    match = AUTHORIZATION.fullmatch(headers["authorization"])
    assert match, headers["authorization"]
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(request["query"].items())
    )
    signed = match["signed"].split(";")
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    canonical_request = "\n".join(
        [request["method"], request["path"] or "/", canonical_query, canonical_headers, match["signed"],
         hashlib.sha256(request["body"]).hexdigest()]
    )
    scope = f"{match['date']}/{match['region']}/{match['service']}/request"
    string_to_sign = "\n".join(
        ["HMAC-SHA256", headers["x-date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(secret.encode(), match["date"])
    for part in (match["region"], match["service"], "request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest(), match


def assert_signed(request: dict[str, Any]) -> None:
    """The request carries a valid HMAC-SHA256 signature by ACCESS_KEY/SECRET_KEY, and no secret."""
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["x-content-sha256"] == hashlib.sha256(request["body"]).hexdigest()
    signature, auth = recompute_signature(request, SECRET_KEY)
    assert auth["ak"] == ACCESS_KEY
    assert (auth["region"], auth["service"]) == ("ap-singapore-1", "rtc")
    assert auth["date"] == headers["x-date"][:8]
    assert {"host", "x-date", "x-content-sha256", "content-type"} <= set(auth["signed"].split(";"))
    assert hmac.compare_digest(signature, auth["signature"])
    # a signature the secret did not make would not match
    assert recompute_signature(request, SECRET_KEY + "x")[0] != auth["signature"]
    assert SECRET_KEY not in request["body"].decode() and SECRET_KEY not in json.dumps(request["headers"])


# -- acting only on ExclusiveGoal ----------------------------------------------------------


def test_every_goal_class_only_exclusive_goals_stop_and_restart_snapshots(db, drain):
    session_id = make_session(db)
    goals = {cls: goal_document(cls, session_id) for cls in GOAL_CLASSES}
    for goal in goals.values():
        enqueue_create_goal(goal)
    drain()

    exclusive_id = goals["ExclusiveGoal"]["_id"]
    assert rtc_calls(exclusive_id) == [("StopSnapshot", "room-1", "snap-1"), ("StopSnapshot", "room-2", "snap-2")]
    assert all(r["status"] == "sent" and r["transport"] == "recorded" for r in goalhub.outbound_records("rtc"))
    for cls, goal in goals.items():
        status = outcome(db, "goal.created", goal["_id"], "snapshot_rtc_sources")["status"]
        assert status == ("ok" if cls == "ExclusiveGoal" else "skipped"), cls
        if cls != "ExclusiveGoal":
            assert rtc_calls(goal["_id"]) == []

    for goal in goals.values():
        end_goal(goal["_id"])
    drain()

    assert rtc_calls(exclusive_id) == [
        ("StopSnapshot", "room-1", "snap-1"),
        ("StopSnapshot", "room-2", "snap-2"),
        ("StartSnapshot", "room-1", "snap-1"),
        ("StartSnapshot", "room-2", "snap-2"),
    ]
    for cls, goal in goals.items():
        status = outcome(db, "goal.ended", goal["_id"], "resume_snapshot_rtc_sources")["status"]
        assert status == ("ok" if cls == "ExclusiveGoal" else "skipped"), cls
    assert len(goalhub.outbound_records("rtc")) == 4


def test_the_outcome_result_lists_each_call(db, drain):
    goal = goal_document("ExclusiveGoal", make_session(db))
    enqueue_create_goal(goal)
    drain()
    result = outcome(db, "goal.created", goal["_id"], "snapshot_rtc_sources")["result"]
    assert result["calls"] == [
        {"action": "StopSnapshot", "room_id": "room-1", "task_id": "snap-1", "transport": "recorded", "duplicate": False},
        {"action": "StopSnapshot", "room_id": "room-2", "task_id": "snap-2", "transport": "recorded", "duplicate": False},
    ]


# -- idempotency ------------------------------------------------------------------------------


def test_the_same_events_delivered_twice_make_one_call_per_source(db, drain):
    goal = goal_document("ExclusiveGoal", make_session(db))
    create_goal(goal)
    drain()
    create_goal(goal)  # redelivery of create_goal
    drain()
    # the receiver itself run again (as after a lost outcome record)
    again = receivers.snapshot_rtc_sources(goal["_id"], "ExclusiveGoal", goal["conditions"])
    assert [call["duplicate"] for call in again["calls"]] == [True, True]
    end_goal(goal["_id"])
    drain()
    end_goal(goal["_id"])
    drain()
    receivers.resume_snapshot_rtc_sources(goal["_id"], "ExclusiveGoal", "ended")

    records = goalhub.outbound_records("rtc", goal["_id"])
    assert [r["payload"]["action"] for r in records] == ["StopSnapshot"] * 2 + ["StartSnapshot"] * 2
    assert all(r["attempts"] == 1 for r in records)


def test_a_session_ending_the_goal_restarts_no_snapshot(db, drain):
    goal = goal_document("ExclusiveGoal", make_session(db))
    enqueue_create_goal(goal)
    drain()
    end_goal(goal["_id"], reason="session_ended")
    drain()
    assert [action for action, _, _ in rtc_calls(goal["_id"])] == ["StopSnapshot", "StopSnapshot"]
    ended = outcome(db, "goal.ended", goal["_id"], "resume_snapshot_rtc_sources")
    assert ended["status"] == "ok" and ended["result"] == {"calls": [], "reason": "session ended"}


def test_an_exclusive_goal_without_its_session_fails_visibly(db, drain, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "1")
    goal = goal_document("ExclusiveGoal", str(ObjectId()))
    enqueue_create_goal(goal)
    drain()
    failed = outcome(db, "goal.created", goal["_id"], "snapshot_rtc_sources")
    assert failed["status"] == "failed" and "LookupError" in failed["error"]
    assert rtc_calls(goal["_id"]) == []


# -- the real client --------------------------------------------------------------------------


def test_the_real_client_sends_signed_stop_and_start_snapshot_calls(db, drain, rtc_server):
    goal = goal_document("ExclusiveGoal", make_session(db))
    enqueue_create_goal(goal)
    drain()
    create_goal(goal)  # delivered twice: still one call per source
    drain()

    assert len(rtc_server.requests) == 2
    for request, source in zip(rtc_server.requests, SOURCES, strict=True):
        assert request["path"] == "/"
        assert request["query"] == {"Action": "StopSnapshot", "Version": "2022-06-01"}
        assert json.loads(request["body"]) == {"AppId": "app-661e", "RoomId": source["room_id"], "TaskId": source["task_id"]}
        assert_signed(request)

    records = goalhub.outbound_records("rtc", goal["_id"])
    assert all(r["transport"] == "real" and r["status"] == "sent" for r in records)
    assert records[0]["response"]["Result"] == "ok"

    end_goal(goal["_id"])
    drain()
    starts = rtc_server.requests[2:]
    assert [r["query"]["Action"] for r in starts] == ["StartSnapshot", "StartSnapshot"]
    assert [json.loads(r["body"])["RoomId"] for r in starts] == ["room-1", "room-2"]
    for request in starts:
        assert_signed(request)


def test_the_recorded_default_and_the_real_client_store_the_same_payload(db, drain, rtc_server, monkeypatch):
    session_id = make_session(db)
    real_goal = goal_document("ExclusiveGoal", session_id)
    enqueue_create_goal(real_goal)
    drain()
    monkeypatch.delenv("GOALHUB_RTC_ACCESS_KEY")
    monkeypatch.delenv("GOALHUB_RTC_SECRET_KEY")
    recorded_goal = goal_document("ExclusiveGoal", session_id)
    enqueue_create_goal(recorded_goal)
    drain()

    real = goalhub.outbound_records("rtc", real_goal["_id"])
    recorded = goalhub.outbound_records("rtc", recorded_goal["_id"])
    assert [r["transport"] for r in real + recorded] == ["real", "real", "recorded", "recorded"]
    assert [r["payload"] for r in real] == [r["payload"] for r in recorded]
    assert len(rtc_server.requests) == 2


def test_an_rtc_error_is_retried_and_the_call_then_made(db, drain, rtc_server, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "2")
    rtc_server.errors.append({"Code": "InternalError", "Message": "try again"})
    goal = goal_document("ExclusiveGoal", make_session(db, SOURCES[:1]))
    enqueue_create_goal(goal)
    drain()

    done = outcome(db, "goal.created", goal["_id"], "snapshot_rtc_sources")
    assert done["status"] == "ok" and done["attempts"] == 2
    assert [r["query"]["Action"] for r in rtc_server.requests] == ["StopSnapshot", "StopSnapshot"]
    (record,) = goalhub.outbound_records("rtc", goal["_id"])
    assert record["status"] == "sent" and record["attempts"] == 2


def test_real_calls_need_an_app_id(monkeypatch, rtc_server):
    monkeypatch.delenv("GOALHUB_RTC_APP_ID")
    with pytest.raises(ValueError, match="GOALHUB_RTC_APP_ID"):
        rtc.call_once("StopSnapshot", str(ObjectId()), "room-1", "snap-1")
    assert rtc_server.requests == []


def test_start_snapshot_bodies_carry_the_configured_snapshot_settings(monkeypatch):
    monkeypatch.setenv("GOALHUB_RTC_START_SNAPSHOT_CONFIG", json.dumps({"ImageConfig": {"Interval": 5}, "RoomId": "x"}))
    request = rtc.build_request("StartSnapshot", "room-1", "snap-1")
    assert request["body"] == {"ImageConfig": {"Interval": 5}, "AppId": None, "RoomId": "room-1", "TaskId": "snap-1"}
    assert "ImageConfig" not in rtc.build_request("StopSnapshot", "room-1", "snap-1")["body"]
    with pytest.raises(ValueError):
        rtc.build_request("DismissRoom", "room-1", "snap-1")


def test_region_and_version_come_from_the_environment(monkeypatch, rtc_server):
    monkeypatch.setenv("GOALHUB_RTC_VERSION", "2023-11-01")
    monkeypatch.setenv("GOALHUB_RTC_REGION", "ap-southeast-1")
    record = rtc.call_once("StopSnapshot", str(ObjectId()), "room-9", "snap-9")
    (request,) = rtc_server.requests
    assert request["query"] == {"Action": "StopSnapshot", "Version": "2023-11-01"}
    signature, auth = recompute_signature(request, SECRET_KEY)
    assert auth["region"] == "ap-southeast-1" and hmac.compare_digest(signature, auth["signature"])
    assert record["payload"]["version"] == "2023-11-01" and record["transport"] == "real"
