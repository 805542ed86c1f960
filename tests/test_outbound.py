"""``send_once``: the call made once per key, its record written before it and marked after,
and what it returns: the record as stored (``duplicate`` added)."""

from __future__ import annotations

from typing import Any

import pytest

from goalhub.outbound import send_once


def test_a_call_is_made_once_and_returns_its_record_as_stored(db: Any) -> None:
    calls: list[int] = []

    def call() -> dict[str, Any]:
        calls.append(1)
        return {"accepted": True}

    first = send_once("rtc", "StopSnapshot:g1:room-1", {"RoomId": "room-1"}, call, goal_id="g1")
    stored = db.outbound.find_one({"_id": "rtc:StopSnapshot:g1:room-1"})
    assert first == {**stored, "duplicate": False}
    assert (first["status"], first["attempts"], first["response"], first["error"]) == ("sent", 1, {"accepted": True},
                                                                                       None)
    assert first["transport"] == "real" and first["goal_id"] == "g1" and first["sent_at"] >= first["created_at"]

    again = send_once("rtc", "StopSnapshot:g1:room-1", {"RoomId": "room-1"}, call, goal_id="g1")
    assert calls == [1]  # not called a second time
    assert again == {**stored, "duplicate": True}


def test_a_failed_call_stays_pending_and_the_next_delivery_sends_it(db: Any) -> None:
    def down() -> None:
        raise ConnectionError("rtc service unreachable")

    with pytest.raises(ConnectionError):
        send_once("rtc", "StopSnapshot:g2:room-1", {"RoomId": "room-1"}, down, goal_id="g2")
    pending = db.outbound.find_one({"_id": "rtc:StopSnapshot:g2:room-1"})
    assert (pending["status"], pending["attempts"]) == ("pending", 1)
    assert "rtc service unreachable" in pending["error"]

    sent = send_once("rtc", "StopSnapshot:g2:room-1", {"RoomId": "room-1"}, lambda: "ok", goal_id="g2")
    assert (sent["status"], sent["attempts"], sent["response"], sent["error"], sent["duplicate"]) == (
        "sent", 2, "ok", None, False)
    assert {k: v for k, v in sent.items() if k != "duplicate"} == db.outbound.find_one({"_id": sent["_id"]})


def test_a_recorded_only_call_is_marked_sent_without_a_transport(db: Any) -> None:
    record = send_once("notification", "goal_added:g3", {"text": "hi"}, goal_id="g3")
    assert (record["transport"], record["status"], record["response"], record["duplicate"]) == (
        "recorded", "sent", None, False)
