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
    assert sent["tries"] == 2  # both calls came back: none was cut off
    assert {k: v for k, v in sent.items() if k != "duplicate"} == db.outbound.find_one({"_id": sent["_id"]})


class Killed(BaseException):
    """A process killed in the middle of a call (``kill -9``): nothing after it runs."""


def test_a_call_cut_off_by_a_crash_is_counted_so_its_resend_is_told_apart(db: Any) -> None:
    sink: list[str] = []  # what the service received, by Idempotency-Key

    def reached_then_killed() -> None:
        sink.append("rtc:StopSnapshot:g4:room-1")
        raise Killed  # the service got it; the mark is never written

    with pytest.raises(Killed):
        send_once("rtc", "StopSnapshot:g4:room-1", {"RoomId": "room-1"}, reached_then_killed, goal_id="g4")
    cut = db.outbound.find_one({"_id": "rtc:StopSnapshot:g4:room-1"})
    assert (cut["status"], cut["tries"], cut["attempts"]) == ("pending", 1, 0)

    def answered() -> str:
        sink.append("rtc:StopSnapshot:g4:room-1")
        return "ok"

    sent = send_once("rtc", "StopSnapshot:g4:room-1", {"RoomId": "room-1"}, answered, goal_id="g4")
    # The one resend the service saw, under the same key, is the call the crash cut off.
    assert sink == ["rtc:StopSnapshot:g4:room-1"] * 2
    assert (sent["status"], sent["tries"], sent["attempts"]) == ("sent", 2, 1)
    assert sent["tries"] - sent["attempts"] == len(sink) - 1


def test_a_recorded_only_call_is_marked_sent_without_a_transport(db: Any) -> None:
    record = send_once("notification", "goal_added:g3", {"text": "hi"}, goal_id="g3")
    assert (record["transport"], record["status"], record["response"], record["duplicate"]) == (
        "recorded", "sent", None, False)
    assert record["tries"] == 0  # nothing was called
    stored = db.outbound.find_one({"_id": "notification:goal_added:g3"})
    assert stored == {k: v for k, v in record.items() if k != "duplicate"}  # written marked, as returned
    assert (stored["attempts"], stored["sent_at"]) == (1, stored["created_at"])
    again = send_once("notification", "goal_added:g3", {"text": "hi"}, goal_id="g3")
    assert again["duplicate"] and db.outbound.count_documents({}) == 1


def test_a_recorded_only_call_marks_a_record_left_pending_by_a_cut_off_call(db: Any) -> None:
    def reached_then_killed() -> None:
        raise SystemExit("worker killed")  # not an Exception: the record is left as a crash leaves it

    with pytest.raises(SystemExit):
        send_once("rtc", "StopSnapshot:g5:room-1", {"RoomId": "room-1"}, reached_then_killed, goal_id="g5")
    # The deployment now records only: the redelivery marks the same record sent, without a call.
    record = send_once("rtc", "StopSnapshot:g5:room-1", {"RoomId": "room-1"}, goal_id="g5")
    assert (record["status"], record["tries"], record["attempts"], record["duplicate"]) == ("sent", 1, 1, False)
    assert db.outbound.count_documents({}) == 1
