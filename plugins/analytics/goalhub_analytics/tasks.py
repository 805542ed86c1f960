"""``goalhub_analytics.tasks.track``: the analytics task of seed 003 ("Trigger Task analytics.tasks.track").

Run by the ``track_goals`` receiver, inline in the job that created the goal (retried in a
job of its own when it fails): it completes the event from the stored goal (the streamer, the
creation time) and sends it once through ``goalhub.send_once`` (kind ``analytics``), so
running it twice records and sends one event.
"""

from __future__ import annotations

import functools
from typing import Any

from bson import ObjectId

from goalhub import get_database, outbound_records, send_once
from goalhub_analytics.sink import get_sink

KIND = "analytics"


def event_key(event: dict[str, Any]) -> str:
    """The ``send_once`` key (and ``Idempotency-Key``) of an event: one per event and goal."""
    return f"{event['event']}:{event['goal_id']}"


def track(event: dict[str, Any]) -> dict[str, Any]:
    """Record (and send, when a sink is configured) one analytics event, once."""
    goal_id = event["goal_id"]
    goal = None
    if ObjectId.is_valid(goal_id):
        goal = get_database().goals.find_one({"_id": ObjectId(goal_id)}, {"metadata": 1, "created_at": 1})
    if goal is not None:
        # The goal's own creation time: the same however late or often the task runs.
        event = {**event, "user_id": (goal.get("metadata") or {}).get("user_id"), "at": goal.get("created_at", event["at"])}
    key = event_key(event)
    sink = get_sink()
    send = None if sink is None else functools.partial(sink.send, f"{KIND}:{key}", event)
    record = send_once(KIND, key, event, send, goal_id=goal_id)
    return {"key": key, "transport": record["transport"], "duplicate": record["duplicate"]}


def events(goal_id: str | None = None) -> list[dict[str, Any]]:
    """The analytics events recorded so far (oldest first), optionally for one goal."""
    return [record["payload"] for record in outbound_records(KIND, goal_id)]
