"""``snapshot_rtc_sources``: "Disable snapshot on exclusive start, enable at end" (seed 000).

When an ``ExclusiveGoal`` is created, each RTC source of the streamer's session (the one in
``conditions.session_id``) gets a ``StopSnapshot(RoomId, TaskId)`` call; when that goal
ends, each source that was stopped for it gets the matching ``StartSnapshot``.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

import goalhub
from goalhub_snapshot import rtc

EXCLUSIVE = "ExclusiveGoal"


def session_sources(session_id: str) -> list[dict[str, str]]:
    """The RTC sources ``[{room_id, task_id}]`` of a session; LookupError if there is no such session."""
    if not ObjectId.is_valid(session_id):
        raise ValueError(f"session id {session_id!r} is not an ObjectId")
    session = goalhub.get_database().sessions.find_one({"_id": ObjectId(session_id)}, {"sources": 1})
    if session is None:
        raise LookupError(f"session {session_id} not found")
    return [{"room_id": s["room_id"], "task_id": s["task_id"]} for s in session.get("sources") or []]


def stopped_sources(goal_id: str) -> list[dict[str, str]]:
    """The sources whose snapshots were stopped for ``goal_id``, in the order they were stopped."""
    stopped = [r for r in goalhub.outbound_records(rtc.SERVICE, goal_id) if r["payload"]["action"] == rtc.STOP]
    return [{"room_id": r["payload"]["body"]["RoomId"], "task_id": r["payload"]["body"]["TaskId"]} for r in stopped]


def _summary(action: str, record: dict[str, Any]) -> dict[str, Any]:
    body = record["payload"]["body"]
    return {
        "action": action,
        "room_id": body["RoomId"],
        "task_id": body["TaskId"],
        "transport": record["transport"],
        "duplicate": record["duplicate"],
    }


@goalhub.receiver("goal.created", EXCLUSIVE)
def snapshot_rtc_sources(goal_id: str, _cls: str, conditions: dict[str, Any]) -> dict[str, Any] | None:
    """Disable snapshots on exclusive start: one ``StopSnapshot`` per source of the goal's session."""
    if _cls != EXCLUSIVE:
        return None
    sources = session_sources(conditions["session_id"])
    calls = [rtc.call_once(rtc.STOP, goal_id, s["room_id"], s["task_id"]) for s in sources]
    return {"calls": [_summary(rtc.STOP, record) for record in calls]}


@goalhub.receiver("goal.ended", EXCLUSIVE)
def resume_snapshot_rtc_sources(goal_id: str, _cls: str, reason: str) -> dict[str, Any] | None:
    """Enable snapshots at exclusive end: the matching ``StartSnapshot`` for each stopped source."""
    if _cls != EXCLUSIVE:
        return None
    if reason == "session_ended":
        # The session's rooms closed with it: there is no stream left to snapshot.
        return {"calls": [], "reason": "session ended"}
    calls = [rtc.call_once(rtc.START, goal_id, s["room_id"], s["task_id"]) for s in stopped_sources(goal_id)]
    return {"calls": [_summary(rtc.START, record) for record in calls]}
