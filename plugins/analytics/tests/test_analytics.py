"""The analytics plugin: one analytics event per created goal, of every class, sent once.

Goals go through the real path (``create_goal`` job, dispatcher, the receiver and its
``track`` task inline, a failed receiver's retry in its own job, SimpleWorker, embedded Redis
and store); the HTTP sink is a local server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from bson import ObjectId
from goalhub_analytics import events, receivers
from goalhub_analytics import tasks as analytics_tasks
from rq.job import Job

import goalhub
from goalhub import get_redis, job_id
from goalhub.testing import create_goal, enqueue_create_goal, queue

GOAL_CLASSES = ["ExclusiveGoal", "TriggerExclusiveGoal", "ShowGoal", "ShowFundingGoal", "KaraokeGoal", "TriggerPrivateGoal"]


@pytest.fixture(autouse=True)
def analytics_plugin(use_plugins):
    use_plugins("analytics")


def goal_document(cls: str, **overrides: Any) -> dict[str, Any]:
    session_id = str(ObjectId())
    goal = {
        "_id": str(ObjectId()),
        "_cls": cls,
        "active": True,
        "conditions": {"session_id": session_id},
        "levels": [{"target": 300}],
        "nbf": None,
        "exp": None,
        "context": {"type": cls.lower(), "session_id": session_id},
        "metadata": {"user_id": str(ObjectId())},
    }
    goal.update(overrides)
    return goal


class SinkServer:
    """A local analytics endpoint: records each POST; answers ``statuses`` first, then 202."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.posts.append({"path": self.path, "headers": dict(self.headers.items()), "json": json.loads(body)})
                self.send_response(server.statuses.pop(0) if server.statuses else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/events"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sink(monkeypatch) -> Iterator[SinkServer]:
    server = SinkServer()
    monkeypatch.setenv("GOALHUB_ANALYTICS_SINK", server.url)
    yield server
    server.close()


def test_every_goal_class_is_tracked_once_through_the_track_task_inline(db, drain):
    goals = {cls: goal_document(cls, nbf=1_700_000_000.5 if cls == "TriggerPrivateGoal" else None) for cls in GOAL_CLASSES}
    for goal in goals.values():
        enqueue_create_goal(goal)
    drain()

    tracked = {event["_cls"]: event for event in events()}
    assert sorted(tracked) == sorted(GOAL_CLASSES)
    for cls, goal in goals.items():
        event = tracked[cls]
        stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
        assert event == {
            "event": "goal.created",
            "goal_id": goal["_id"],
            "_cls": cls,
            "active": True,
            "user_id": goal["metadata"]["user_id"],
            "session_id": goal["conditions"]["session_id"],
            "context_type": cls.lower(),
            "levels": [{"target": 300}],
            "nbf": goal["nbf"],
            "exp": None,
            "at": stored["created_at"],
        }
        outcome = db.outcomes.find_one({"event": "goal.created", "goal_id": goal["_id"], "receiver": "track_goals"})
        assert outcome["status"] == "ok" and outcome["attempts"] == 1
        assert outcome["result"] == {"key": f"goal.created:{goal['_id']}", "transport": "recorded", "duplicate": False}
        # made by goalhub_analytics.tasks.track inside the create job: no job of its own
        assert not Job.exists(job_id("track", goal["_id"]), connection=get_redis())
    ran = {job_id for q in (queue(),) for job_id in q.finished_job_registry.get_job_ids()}
    assert ran == {f"create-{goal['_id']}" for goal in goals.values()}  # one job per goal
    assert all(r["transport"] == "recorded" and r["status"] == "sent" for r in goalhub.outbound_records("analytics"))


def test_the_same_event_delivered_twice_records_one_event(db, drain):
    goal = goal_document("ShowGoal")
    create_goal(goal)
    drain()
    create_goal(goal)  # redelivery of create_goal
    drain()
    assert len(events(goal["_id"])) == 1

    # the receiver itself run again: send_once finds the event sent
    again = receivers.track_goals(goal["_id"], True, "ShowGoal", goal["conditions"], goal["context"], goal["levels"], None, None)
    assert again["duplicate"] is True
    # the track job run again: send_once finds the event sent
    assert analytics_tasks.track(dict(events(goal["_id"])[0]))["duplicate"] is True
    assert len(events(goal["_id"])) == 1 and goalhub.outbound_records("analytics")[0]["attempts"] == 1


def test_the_http_sink_receives_each_event_once(db, drain, sink):
    goal = goal_document("KaraokeGoal")
    enqueue_create_goal(goal)
    drain()
    create_goal(goal)  # the event delivered twice
    drain()
    event = events(goal["_id"])[0]
    analytics_tasks.track(dict(event))  # the task run twice
    # the receiver run twice (an outcome record lost): it sends nothing new
    receivers.track_goals(goal["_id"], True, "KaraokeGoal", goal["conditions"], goal["context"], goal["levels"], None, None)
    drain()

    assert len(sink.posts) == 1
    (post,) = sink.posts
    assert post["path"] == "/events"
    assert post["json"] == event and post["json"]["goal_id"] == goal["_id"] and post["json"]["_cls"] == "KaraokeGoal"
    assert post["headers"]["Idempotency-Key"] == f"analytics:goal.created:{goal['_id']}"
    assert post["headers"]["Content-Type"] == "application/json"
    (record,) = goalhub.outbound_records("analytics")
    assert record["transport"] == "real" and record["status"] == "sent" and record["response"] == {"status": 202}


def test_a_failing_sink_is_retried_in_a_job_of_its_own_until_the_event_is_accepted(db, drain, sink, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "2")
    sink.statuses = [503]
    goal = goal_document("ExclusiveGoal")
    enqueue_create_goal(goal)
    drain()

    assert [p["json"]["goal_id"] for p in sink.posts] == [goal["_id"], goal["_id"]]
    (record,) = goalhub.outbound_records("analytics")
    assert record["status"] == "sent" and record["attempts"] == 2 and record["error"] is None
    outcome = db.outcomes.find_one({"event": "goal.created", "goal_id": goal["_id"], "receiver": "track_goals"})
    assert outcome["status"] == "ok" and outcome["attempts"] == 2
    # the inline run failed in the create job; the retry ran alone, as a receiver job
    assert len(queue().finished_job_registry.get_job_ids()) == 2


def test_the_sink_must_be_an_http_url(monkeypatch):
    monkeypatch.setenv("GOALHUB_ANALYTICS_SINK", "kafka://events")
    with pytest.raises(ValueError, match="GOALHUB_ANALYTICS_SINK"):
        analytics_tasks.track({"event": "goal.created", "goal_id": str(ObjectId()), "at": 0.0})
    assert events() == []
