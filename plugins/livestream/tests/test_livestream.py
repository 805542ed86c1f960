"""The livestream plugin: the four ``goal.added`` receivers, for every goal class.

Events go through the real path: blinker ``features.livestream`` with sender ``goal.added``,
the dispatcher, one RQ job per receiver (SimpleWorker), embedded Redis and store. The real
``pusher`` library and the notification sink talk to local HTTP servers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from bson import ObjectId
from goalhub_livestream import channel_data_key, feed, receivers, stream_viewer_channel

import goalhub
from goalhub import get_redis
from goalhub.testing import enqueue_create_goal

GOAL_CLASSES = ["ExclusiveGoal", "TriggerExclusiveGoal", "ShowGoal", "ShowFundingGoal", "KaraokeGoal", "TriggerPrivateGoal"]
RECEIVERS = [
    "generate_livestream_feed",
    "trigger_notify_goal_added",
    "notify_stream_authorized",
    "invalidate_cached_pusher_channel_data",
]
PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET = "1766001", "key-3f9a", "secret-7c41"


@pytest.fixture(autouse=True)
def livestream_plugin(use_plugins):
    use_plugins("livestream")


def goal_added(cls: str, session_id: str | None = None, streamer_id: str | None = None) -> dict[str, Any]:
    """The seed's ``goal.added`` arguments for a new goal of ``cls``."""
    session_id = session_id or str(ObjectId())
    return {
        "goal_id": str(ObjectId()),
        "_cls": cls,
        "conditions": {"session_id": session_id},
        "context": {"type": cls.lower(), "session_id": session_id},
        "session_id": session_id,
        "streamer_id": streamer_id or str(ObjectId()),
    }


def fire(event: dict[str, Any]) -> None:
    goalhub.send_event("goal.added", **event)


def call_receivers_directly(event: dict[str, Any]) -> None:
    """Every receiver run once more, as if its job ran twice (an outcome record lost)."""
    receivers.generate_livestream_feed(event["goal_id"], event["_cls"], event["context"], event["session_id"], event["streamer_id"])
    receivers.trigger_notify_goal_added(event["goal_id"], event["_cls"], event["context"], event["session_id"], event["streamer_id"])
    receivers.notify_stream_authorized(event["goal_id"], event["_cls"], event["context"], event["session_id"], event["streamer_id"])
    receivers.invalidate_cached_pusher_channel_data(event["session_id"], event["streamer_id"])


class LocalServer:
    """A local HTTP endpoint: records each POST and answers 200 ``{}`` (or the queued statuses first)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                server.posts.append(
                    {"path": parts.path, "query": dict(parse_qsl(parts.query)), "headers": dict(self.headers.items()), "body": body}
                )
                data = b"{}"
                self.send_response(server.statuses.pop(0) if server.statuses else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pusher_server(monkeypatch) -> Iterator[LocalServer]:
    server = LocalServer()
    for name, value in {
        "GOALHUB_PUSHER_APP_ID": PUSHER_APP_ID,
        "GOALHUB_PUSHER_KEY": PUSHER_KEY,
        "GOALHUB_PUSHER_SECRET": PUSHER_SECRET,
        "GOALHUB_PUSHER_HOST": "127.0.0.1",
        "GOALHUB_PUSHER_PORT": str(server.port),
        "GOALHUB_PUSHER_SSL": "false",
    }.items():
        monkeypatch.setenv(name, value)
    yield server
    server.close()


@pytest.fixture
def notify_server(monkeypatch) -> Iterator[LocalServer]:
    server = LocalServer()
    monkeypatch.setenv("GOALHUB_NOTIFY_SINK", f"http://127.0.0.1:{server.port}/notifications")
    yield server
    server.close()


def outcomes(db, goal_id: str) -> dict[str, dict[str, Any]]:
    return {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal_id, "plugin": "livestream"})}


# -- every class ---------------------------------------------------------------------------


def test_goal_added_of_every_class_gets_a_feed_item_a_notification_and_a_pusher_event(db, drain):
    session_id, streamer_id = str(ObjectId()), str(ObjectId())
    events = {cls: goal_added(cls, session_id, streamer_id) for cls in GOAL_CLASSES}
    for event in events.values():
        fire(event)
    drain()

    channel = f"presence-enc-stream-viewer@{streamer_id}.sd.{session_id}"
    items = {item["_cls"]: item for item in feed(session_id)}
    assert sorted(items) == sorted(GOAL_CLASSES)
    for cls, event in events.items():
        item = items[cls]
        assert item["_id"] == f"{session_id}:{event['goal_id']}"
        assert {k: item[k] for k in ("session_id", "goal_id", "streamer_id", "context")} == {
            "session_id": session_id, "goal_id": event["goal_id"], "streamer_id": streamer_id, "context": event["context"]
        }
        assert isinstance(item["at"], float)
        (notification,) = goalhub.outbound_records("notification", event["goal_id"])
        assert notification["payload"]["audience"] == {"session_id": session_id, "role": "viewer"}
        assert notification["payload"]["_cls"] == cls and notification["status"] == "sent"
        (pushed,) = goalhub.outbound_records("pusher", event["goal_id"])
        assert pushed["payload"]["channel"] == channel and pushed["payload"]["event"] == "stream-authorized"
        assert pushed["payload"]["data"]["goal_id"] == event["goal_id"] and pushed["transport"] == "recorded"
        statuses = {name: o["status"] for name, o in outcomes(db, event["goal_id"]).items()}
        assert statuses == dict.fromkeys(RECEIVERS, "ok"), cls


def test_goal_created_of_every_class_leaves_the_livestream_untouched(db, drain):
    session_id = str(ObjectId())
    for cls in GOAL_CLASSES:
        enqueue_create_goal(
            {
                "_id": str(ObjectId()), "_cls": cls, "active": True, "conditions": {"session_id": session_id},
                "levels": [{"target": 300}], "nbf": None, "exp": None, "context": {"type": cls.lower()},
                "metadata": {"user_id": str(ObjectId())},
            }
        )
    drain()
    assert db.goals.count_documents({}) == len(GOAL_CLASSES)
    assert feed(session_id) == [] and db.feed.count_documents({}) == 0
    assert goalhub.outbound_records() == []
    assert db.outcomes.count_documents({"plugin": "livestream"}) == 0


# -- idempotency -----------------------------------------------------------------------------


def test_the_same_event_delivered_twice_gives_one_feed_item_one_notification_one_pusher_event(db, drain):
    event = goal_added("ShowGoal")
    fire(event)
    drain()
    first_item = db.feed.find_one({})
    fire(event)
    drain()
    call_receivers_directly(event)

    assert db.feed.count_documents({}) == 1 and db.feed.find_one({}) == first_item
    assert [r["kind"] for r in goalhub.outbound_records()] == ["notification", "pusher"]
    assert all(r["attempts"] == 1 for r in goalhub.outbound_records())
    assert all(o["attempts"] == 1 for o in outcomes(db, event["goal_id"]).values())


def test_a_receiver_job_run_twice_reports_the_duplicate(db, drain):
    event = goal_added("KaraokeGoal")
    fire(event)
    drain()
    again = receivers.notify_stream_authorized(event["goal_id"], event["_cls"], event["context"], event["session_id"], event["streamer_id"])
    assert again["duplicate"] is True
    created = receivers.generate_livestream_feed(event["goal_id"], event["_cls"], event["context"], event["session_id"], event["streamer_id"])
    assert created == {"feed_item_id": f"{event['session_id']}:{event['goal_id']}", "created": False}


# -- Pusher through the real library ---------------------------------------------------------


def test_the_real_pusher_library_triggers_stream_authorized_once(db, drain, pusher_server):
    event = goal_added("ExclusiveGoal")
    fire(event)
    drain()
    fire(event)  # delivered twice
    drain()
    call_receivers_directly(event)  # and every receiver run twice

    assert len(pusher_server.posts) == 1
    (post,) = pusher_server.posts
    assert post["path"] == f"/apps/{PUSHER_APP_ID}/events"
    body = json.loads(post["body"])
    channel = stream_viewer_channel(event["streamer_id"], event["session_id"])
    assert channel == f"presence-enc-stream-viewer@{event['streamer_id']}.sd.{event['session_id']}"
    assert body["channels"] == [channel] and body["name"] == "stream-authorized"
    assert json.loads(body["data"]) == {
        "goal_id": event["goal_id"], "_cls": "ExclusiveGoal", "session_id": event["session_id"],
        "streamer_id": event["streamer_id"], "context": event["context"],
    }
    # Pusher's request signature, recomputed with the app secret
    query = dict(post["query"])
    signature = query.pop("auth_signature")
    assert query["auth_key"] == PUSHER_KEY and query["auth_version"] == "1.0"
    assert query["body_md5"] == hashlib.md5(post["body"]).hexdigest()
    string_to_sign = "\n".join(["POST", post["path"], "&".join(f"{k}={v}" for k, v in sorted(query.items()))])
    expected = hmac.new(PUSHER_SECRET.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    assert signature != hmac.new(b"another-secret", string_to_sign.encode(), hashlib.sha256).hexdigest()

    (record,) = goalhub.outbound_records("pusher")
    assert record["transport"] == "real" and record["status"] == "sent"
    assert record["payload"] == {"channel": channel, "event": "stream-authorized", "data": json.loads(body["data"])}


def test_a_pusher_error_fails_the_receiver_alone_and_the_retry_sends(db, drain, pusher_server, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "2")
    pusher_server.statuses = [500]
    event = goal_added("TriggerPrivateGoal")
    fire(event)
    drain()
    results = outcomes(db, event["goal_id"])
    assert results["notify_stream_authorized"]["status"] == "ok" and results["notify_stream_authorized"]["attempts"] == 2
    assert all(results[name]["attempts"] == 1 for name in RECEIVERS if name != "notify_stream_authorized")
    assert len(pusher_server.posts) == 2
    (record,) = goalhub.outbound_records("pusher")
    assert record["status"] == "sent" and record["attempts"] == 2


# -- notifications ---------------------------------------------------------------------------


def test_the_notification_sink_receives_one_notification(db, drain, notify_server):
    event = goal_added("ShowFundingGoal")
    fire(event)
    drain()
    fire(event)
    drain()
    call_receivers_directly(event)

    (post,) = notify_server.posts
    assert post["path"] == "/notifications"
    assert post["headers"]["Idempotency-Key"] == f"notification:goal.added:{event['goal_id']}:{event['session_id']}"
    notification = json.loads(post["body"])
    assert notification["type"] == "goal.added" and notification["audience"] == {"session_id": event["session_id"], "role": "viewer"}
    (record,) = goalhub.outbound_records("notification")
    assert record["transport"] == "real" and record["payload"] == notification


# -- the cached channel data -----------------------------------------------------------------


def test_goal_added_deletes_the_cached_channel_data_of_that_channel_only(db, drain):
    event = goal_added("ShowGoal")
    channel = stream_viewer_channel(event["streamer_id"], event["session_id"])
    other = stream_viewer_channel(event["streamer_id"], str(ObjectId()))
    redis = get_redis()
    redis.set(channel_data_key(channel), json.dumps({"user_id": "viewer-1", "user_info": {"authorized": False}}))
    redis.set(channel_data_key(other), "other session")
    assert channel_data_key(channel) == f"pusher:channel-data:{channel}"

    fire(event)
    drain()

    assert redis.get(channel_data_key(channel)) is None
    assert redis.get(channel_data_key(other)) == b"other session"
    result = outcomes(db, event["goal_id"])["invalidate_cached_pusher_channel_data"]["result"]
    assert result == {"key": channel_data_key(channel), "deleted": 1}

    # cached again, then the same event delivered again: the outcome is done, the cache stays
    redis.set(channel_data_key(channel), "fresh")
    fire(event)
    drain()
    assert redis.get(channel_data_key(channel)) == b"fresh"
