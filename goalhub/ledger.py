"""Which receivers finished which event of a goal: the durable fact behind exactly-once.

An ``ok`` outcome record is what stops a receiver running twice, but outcome records expire
(``goalhub.retention``, 30 days by default) while goals are kept for ever, and backfill,
resume and redelivery rebuild events from the goals. So each goal has one small document in
``delivered``, kept as long as the goal (no ``stored_at``: retention never purges it)::

    {"_id": "<goal_id>", "done": ["goal.created|analytics.send_analytics", ...]}

``finish`` adds ``<event>|<receiver id>`` to it (one upsert with ``$addToSet``) as soon as
the receiver returns, before its ``ok`` outcome is written (``goalhub.dispatch``: a receiver
job's at once, an inline run's with the event's other inline outcomes when they are over).
The two are separate writes (the store has no batch across collections without a
transaction): the ledger first, a crash between them leaves the receiver done by the ledger
and its outcome made ``ok`` by the next run, never a second call. Every path that could run a receiver again
asks ``finished`` first: a delivery (live, redelivered or backfilled) writes such a receiver's
new outcome ``ok`` without running it, a receiver job finishes it without running it, and
backfill counts the event as already done.
"""

from __future__ import annotations

from typing import Any

COLLECTION = "delivered"


def entry(event: str, receiver_id: str) -> str:
    return f"{event}|{receiver_id}"


def finish(db: Any, goal_id: str, event: str, receiver_id: str) -> None:
    """Record that ``receiver_id`` finished ``event`` of ``goal_id`` (idempotent)."""
    db[COLLECTION].update_one({"_id": goal_id}, {"$addToSet": {"done": entry(event, receiver_id)}}, upsert=True)


def finished(db: Any, goal_id: str) -> frozenset[str]:
    """The ``<event>|<receiver id>`` entries finished for ``goal_id``."""
    record = db[COLLECTION].find_one({"_id": goal_id})
    return frozenset(record.get("done", ())) if record else frozenset()


def finished_many(db: Any, goal_ids: list[str]) -> dict[str, frozenset[str]]:
    """``finished`` of several goals in one read."""
    return {r["_id"]: frozenset(r.get("done", ())) for r in db[COLLECTION].find({"_id": {"$in": goal_ids}})}
