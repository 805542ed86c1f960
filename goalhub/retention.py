"""How long goalhub keeps what it writes, and what deletes it after.

| collection | what | kept (default) | setting |
|---|---|---|---|
| ``requests`` | idempotency records (replayed answers) | 1 day | ``GOALHUB_RETENTION_REQUESTS`` |
| ``outcomes`` | receiver outcomes, with the event's arguments | 30 days | ``GOALHUB_RETENTION_OUTCOMES`` |
| ``events`` | which receivers an event went to | 30 days | ``GOALHUB_RETENTION_EVENTS`` |
| ``outbound`` | outbound calls (RTC, Pusher, ...) and their answers | 30 days | ``GOALHUB_RETENTION_OUTBOUND`` |
| ``goals``, ``sessions`` | the platform's data | until the platform deletes them | |

Each record carries ``stored_at`` (a UTC datetime, from ``stamp()``). On MongoDB a TTL index
on it (``expireAfterSeconds``) lets the server delete expired records itself; mongomock
honours the same index. The embedded store has no TTL monitor: ``purge()`` deletes expired
records, run by the scheduler process (in a thread) every ``GOALHUB_PURGE_INTERVAL`` seconds
and by ``goalhub purge``; it finds them through the ``stored_at`` index (its query, an ``$or``
of a datetime upper bound and ``$exists: false``, is one the embedded store answers through
one). Records written before ``stored_at`` existed are judged by their epoch timestamps. An
outcome that expires does not take its "already ok" memory with it: which receivers finished
which event of a goal is kept as long as the goal, in ``delivered`` (``goalhub.ledger``),
which is never purged; an event delivered again (backfill, resume, retry, a redelivery) after
its outcomes expired runs none of those receivers again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import OperationFailure

from goalhub import config

log = logging.getLogger(__name__)

FIELD = "stored_at"
INDEX = "stored_at_ttl"
# Each collection, and the epoch fields that date its records written without ``stored_at``.
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "requests": ("created_at",),
    "outcomes": ("queued_at", "at"),
    "events": ("delivered_at",),
    "outbound": ("created_at",),
}

# Records deleted per write of a purge (about 80 ms of the embedded store's write lock), and
# found per read (their ids held in memory).
PURGE_BATCH = 500
PURGE_READ = 50_000

_last_purge: dict[str, Any] = {}  # when the last purge started, and its thread


def stamp() -> dict[str, datetime]:
    """The field every expiring record is written with: ``{"stored_at": <now, naive UTC>}``
    (naive: pymongo reads datetimes back naive, and mongomock compares with naive UTC), to the
    millisecond, as BSON stores it: a record written and returned without a read equals it as read."""
    now = datetime.now(UTC)
    return {FIELD: now.replace(microsecond=now.microsecond // 1000 * 1000, tzinfo=None)}


def _embedded(db: Any) -> bool:
    return type(db).__module__ == "goalhub.sqlite_store"


def ensure_indexes(db: Any) -> None:
    """TTL indexes on ``stored_at`` (MongoDB, mongomock); a plain index on the embedded store,
    whose expiry is ``purge``. A changed lifetime is applied to an existing index (collMod)."""
    for name in COLLECTIONS:
        ttl = config.retention_seconds(name)
        collection = db[name]
        if _embedded(db) or ttl <= 0:
            collection.create_index(FIELD, name=f"{FIELD}_1")
            continue
        try:
            collection.create_index(FIELD, name=INDEX, expireAfterSeconds=ttl)
        except OperationFailure:
            try:
                db.command("collMod", name, index={"name": INDEX, "expireAfterSeconds": ttl})
            except (OperationFailure, NotImplementedError, TypeError):
                collection.drop_index(INDEX)
                collection.create_index(FIELD, name=INDEX, expireAfterSeconds=ttl)


def purge(db: Any, now: float | None = None, dry_run: bool = False) -> dict[str, int]:
    """Delete every record of ``db`` past its lifetime; returns how many per collection (would be,
    if dry). The caller opens the store (``goalhub.store``, which itself calls ``ensure_indexes``)."""
    now = time.time() if now is None else now
    counts = {}
    for name, epoch_fields in COLLECTIONS.items():
        ttl = config.retention_seconds(name)
        if ttl <= 0:
            counts[name] = 0
            continue
        cutoff = datetime.fromtimestamp(now - ttl, UTC).replace(tzinfo=None)
        legacy = [{FIELD: {"$exists": False}, field: {"$lt": now - ttl}} for field in epoch_fields]
        query = {"$or": [{FIELD: {"$lt": cutoff}}, *legacy]}
        collection = db[name]
        counts[name] = collection.count_documents(query) if dry_run else _delete_in_batches(collection, query)
    return counts


def _delete_in_batches(collection: Any, query: dict[str, Any]) -> int:
    """``delete_many(query)``, ``PURGE_BATCH`` records per write: up to ``PURGE_READ`` of them
    found first (a read, which on the embedded store takes no lock), then deleted by ``_id``
    with the query checked again (a record written again meanwhile stays). The embedded store's
    writers wait only for one batch's deletes, not for the whole purge; and the index entries
    the read goes through (``sqlite_store._datetime_range``) are read once per ``PURGE_READ``."""
    deleted = 0
    while True:
        ids = [doc["_id"] for doc in collection.find(query, {"_id": 1}).limit(PURGE_READ)]
        for start in range(0, len(ids), PURGE_BATCH):
            batch = {"$and": [{"_id": {"$in": ids[start:start + PURGE_BATCH]}}, query]}
            deleted += collection.delete_many(batch).deleted_count
        if len(ids) < PURGE_READ:
            return deleted


def purge_when_due(db: Any, interval: float | None = None) -> threading.Thread | None:
    """Start ``purge`` on ``db`` in a thread of its own if ``db`` is the embedded store, the last
    purge in this process started ``interval`` seconds ago and none runs still; returns the
    thread. The scheduler calls it on every poll, and its loop goes on meanwhile: SQLite reads
    the index entries with the GIL released, and the deletes hold the store's write lock one
    batch at a time, so activations are not held up by a purge of a big store. MongoDB expires
    records by itself."""
    interval = config.settings().PURGE_INTERVAL if interval is None else interval
    now = time.monotonic()
    running = _last_purge.get("thread")
    if (running is not None and running.is_alive()) or now - _last_purge.get("at", -interval) < interval:
        return None
    _last_purge["at"] = now
    if not _embedded(db):
        return None
    thread = threading.Thread(target=_purge_logged, args=(db,), name="goalhub-purge", daemon=True)
    _last_purge["thread"] = thread
    thread.start()
    return thread


def _purge_logged(db: Any) -> None:
    try:
        counts = purge(db)
    except Exception:  # noqa: BLE001  (a failed purge is retried at the next interval; the scheduler goes on)
        log.exception("purging expired records failed")
        return
    if any(counts.values()):
        log.info("purged expired records: %s", counts)


def expires_in(name: str) -> timedelta | None:
    """The configured lifetime of ``name``'s records (None: kept for ever)."""
    ttl = config.retention_seconds(name)
    return timedelta(seconds=ttl) if ttl > 0 else None
