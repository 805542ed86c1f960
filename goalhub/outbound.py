"""Outbound calls (RTC, Pusher, notifications, analytics), made once per key and recorded.

Every outbound client has a real implementation, chosen by environment, and a default
that only records the call. Both go through ``send_once``: the call is named by a
deterministic key (what it does and for which goal), written to the ``outbound``
collection before it is made and marked ``sent`` after (a call only recorded is written
``sent`` at once, in one write: nothing happens between the two). Delivering the same event again
finds the key ``sent`` and makes no second call. A worker killed between a real call
and its ``sent`` mark leaves it ``pending``; the retry makes the call again (at least
once, for that one window), which is why the real clients send only idempotent calls,
under the same key (``HttpSink``'s ``Idempotency-Key``), so the service drops the resend.
The record counts both: ``tries``, the real calls begun, and ``attempts``, those that came
back (answered or raised); ``tries - attempts`` calls were cut off by a crash, and so are
the only resends a service can see. Operators read the records with ``goalhub outbound``
or in the ``outbound`` collection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from goalhub import retention, tracing
from goalhub.redaction import redact
from goalhub.store import get_database


def send_once(
    kind: str,
    key: str,
    payload: dict[str, Any],
    send: Callable[[], Any] | None = None,
    *,
    goal_id: str | None = None,
) -> dict[str, Any]:
    """Make the call ``send`` (None: record only) unless ``kind:key`` was sent already.

    Returns the record, with ``duplicate: True`` when nothing was sent this time.
    A ``send`` that raises leaves the record ``pending`` with the error, and re-raises.
    Traced (``goalhub.tracing``) as a client span ``outbound <kind>``: kind, key, goal, transport,
    whether it was a duplicate, the error's redacted text.
    """
    if not tracing.enabled():
        return _send_once(kind, key, payload, send, goal_id)
    with tracing.span(f"outbound {kind}", {"goalhub.outbound.kind": kind, "goalhub.outbound.key": key,
                                           "goalhub.goal_id": goal_id,
                                           "goalhub.outbound.transport": "recorded" if send is None else "real"},
                      kind="client") as span:
        sent = _send_once(kind, key, payload, send, goal_id)
        span.set({"goalhub.outbound.duplicate": sent["duplicate"]})
        return sent


def _send_once(kind: str, key: str, payload: dict[str, Any], send: Callable[[], Any] | None,
               goal_id: str | None) -> dict[str, Any]:
    db = get_database()
    _id = f"{kind}:{key}"
    record = {
        "_id": _id,
        "kind": kind,
        "key": key,
        "goal_id": goal_id,
        "payload": payload,
        "transport": "recorded" if send is None else "real",
        "status": "pending",
        "tries": int(send is not None),  # this call, begun right after the insert
        "attempts": 0,
        "created_at": time.time(),
        **retention.stamp(),
    }
    if send is None:  # nothing is called between a record and its mark: written marked, in one write
        record |= {"status": "sent", "attempts": 1, "sent_at": record["created_at"], "response": None, "error": None}
    try:
        db.outbound.insert_one(record)
    except DuplicateKeyError:
        existing = db.outbound.find_one({"_id": _id})
        if existing["status"] == "sent":
            return {**existing, "duplicate": True}
        if send is not None:  # a try again: after a raise, or after a crash cut one off
            db.outbound.update_one({"_id": _id}, {"$inc": {"tries": 1}})
    else:
        if send is None:
            return {**record, "duplicate": False}
    response = None
    if send is not None:
        try:
            response = send()
        except Exception as exc:
            db.outbound.update_one(
                {"_id": _id}, {"$set": {"error": redact(f"{type(exc).__name__}: {exc}")}, "$inc": {"attempts": 1}}
            )
            raise
    sent = db.outbound.find_one_and_update(  # the mark and the record as stored, in one operation
        {"_id": _id},
        {"$set": {"status": "sent", "sent_at": time.time(), "response": response, "error": None}, "$inc": {"attempts": 1}},
        return_document=ReturnDocument.AFTER,
    )
    return {**sent, "duplicate": False}


def records(kind: str | None = None, goal_id: str | None = None) -> list[dict[str, Any]]:
    """Outbound records, oldest first, optionally for one kind or goal."""
    query: dict[str, Any] = {}
    if kind:
        query["kind"] = kind
    if goal_id:
        query["goal_id"] = goal_id
    return list(get_database().outbound.find(query).sort("created_at", 1))


def kinds() -> list[str]:
    """The kinds of outbound call recorded so far (each plugin names its own), sorted."""
    return sorted(str(kind) for kind in get_database().outbound.distinct("kind"))


class HttpSink:
    """A plain HTTP endpoint for outbound events: POSTs each as JSON with an ``Idempotency-Key``
    header (the ``kind:key`` of ``send_once``), so the receiving service can drop a resend, and,
    when tracing, the W3C ``traceparent`` of the call's span."""

    def __init__(self, url: str, timeout: float = 5.0, *, setting: str = "sink URL") -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{setting} must be an http(s):// URL, not {url!r}")
        self.url = url
        self.timeout = timeout

    def send(self, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        import requests  # only a configured sink needs it

        response = requests.post(self.url, json=payload, headers={"Idempotency-Key": key, **tracing.carrier()},
                                 timeout=self.timeout)
        response.raise_for_status()
        return {"status": response.status_code}
