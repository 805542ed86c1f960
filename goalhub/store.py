"""The one store opener: a pymongo-style database for everything goalhub keeps.

``GOALHUB_MONGO_URI`` set to ``mongodb://...`` (or ``mongodb+srv://``) gives pymongo on a
real MongoDB. Unset, it gives the embedded on-disk store (``goalhub.sqlite_store``, SQLite
with real indexes and cross-process atomic operations) under ``GOALHUB_HOME``.
``mongomock://`` gives an in-memory mongomock database, for fast unit tests only (it ignores
some arguments, ``collation`` in ``find`` among them, where the embedded store refuses them).
Receivers and tasks use nothing but the pymongo API on what ``get_database()`` returns; the
embedded store either does what pymongo does on MongoDB or raises an error naming the method
or argument it does not support (``tests/test_store_refusals.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from goalhub import config, retention, schema

# Indexes every backend gets; plugins declare their own through ``ensure_index``.
INDEXES: dict[str, list[tuple[str, dict]]] = {
    # lifecycle.pending: the reconciler's scan, over the goals whose activation or end is pending
    "goals": [("conditions.session_id", {}), ("metadata.user_id", {}), ("_cls", {}), ("lifecycle.pending", {"sparse": True})],
    "sessions": [("user", {}), ("active", {})],
    "outcomes": [("goal_id", {}), ("event_id", {}), ("status", {})],
    "events": [("goal_id", {})],
    "outbound": [("kind", {}), ("goal_id", {})],
    # goalhub.outbox: the relay's scan, the open-goal cap's count
    "accepted": [("state", {}), ("accepted_at", {}), ("session_id", {})],
    "jobs": [("state", {}), ("enqueued_at", {})],  # goalhub.durable: the reconciler's scan
}

_cache: dict[tuple[str, tuple[Path, str]], tuple[int, Any, bool]] = {}  # key -> (pid, database, fork-safe)


def open_database(uri: str | None = None) -> Any:
    """Open the configured database (a new client each call; see ``get_database``)."""
    uri = uri if uri is not None else config.settings().MONGO_URI
    name = config.settings().MONGO_DB
    if uri and uri.startswith(("mongodb://", "mongodb+srv://")):
        import pymongo  # deferred: only a MongoDB store needs the client

        client: Any = pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000, tz_aware=False)
        database: Any = client.get_default_database(default=name)
    elif uri and uri.startswith("mongomock://"):
        import mongomock  # deferred: optional, unit tests only

        database = mongomock.MongoClient()[name]
    elif uri:
        raise ValueError(f"GOALHUB_MONGO_URI must be mongodb://, mongodb+srv:// or mongomock://, not {uri!r}")
    else:
        from goalhub.sqlite_store import SQLiteClient  # deferred: only the embedded store needs it

        database = SQLiteClient(config.home() / "store")[name]
    for collection, indexes in INDEXES.items():
        for keys, options in indexes:
            database[collection].create_index(keys, **options)
    retention.ensure_indexes(database)  # stored_at: TTL indexes, or the embedded store's purge
    schema.check(database)  # a store written by a newer goalhub is refused (goalhub.schema)
    return database


def get_database() -> Any:
    """The process's database, opened once per process. A forked child (an RQ work-horse) keeps
    its parent's embedded store, which opens its own SQLite connection after a fork, so a job
    does not open the store and ensure its indexes again; a MongoDB client is opened anew."""
    # The configured home, not the resolved one: this runs on every store access.
    key = (config.settings().MONGO_URI or "", config.home_key())
    cached = _cache.get(key)
    if cached and (cached[0] == os.getpid() or cached[2]):
        return cached[1]
    database = open_database()
    _cache[key] = (os.getpid(), database, not config.settings().MONGO_URI)
    return database


# SQLite checkpoints inside the commit that takes the WAL past 1,000 pages (4 MiB): that commit
# stalls for 10-30 ms, about one job in ten on a pool worker. A process that runs jobs one after
# another checkpoints between them instead (goalhub.pool); its commits checkpoint only past this.
DEFERRED_CHECKPOINT_PAGES = 10_000


def tune_for_jobs(database: Any) -> None:
    """The embedded store, for a process that runs RQ jobs one after another, each under RQ's
    job timeout (a pool worker): it checkpoints the WAL itself between jobs (``checkpoint``),
    its commits only past ``DEFERRED_CHECKPOINT_PAGES``; and its writers wait their turn on the
    store's writers file, woken as soon as the last writer lets go, instead of sleeping in
    SQLite's busy handler (``SQLiteClient._write``: a writer stuck while it holds the file is
    bounded by its job's timeout, then by the pool, which kills it). Nothing on MongoDB."""
    if (client := _embedded(database)) is not None:
        client.autocheckpoint = DEFERRED_CHECKPOINT_PAGES
        client.queue_writers = True


def checkpoint(database: Any) -> bool:
    """Checkpoint the embedded store's WAL now, as far as readers allow, waiting for no lock;
    whether all of it is copied back (a reader's snapshot can hold some). Nothing on MongoDB."""
    if (client := _embedded(database)) is None:
        return True
    frames, copied = client.checkpoint()
    return copied >= frames


def drop_rid_index(database: Any) -> bool | None:
    """Drop the embedded store's index that releases before 2026-12-04 made on its index entries'
    row ids (``SQLiteClient.drop_rid_index``): whether there was one; None on MongoDB."""
    client = _embedded(database)
    return None if client is None else bool(client.drop_rid_index())


def take_write_stats() -> tuple[int, float, float]:
    """This process's write transactions on the embedded store since it last asked: (how many,
    seconds they waited for its write lock, seconds they held it); zeros on MongoDB, which has
    no one writer (``goalhub.sqlite_store.WriteStats``; ``goalhub.metrics.store_writes``)."""
    if config.settings().MONGO_URI:
        return 0, 0.0, 0.0
    from goalhub.sqlite_store import WRITES  # deferred: loaded already wherever the embedded store is open

    return WRITES.take()


def update_each(collection: Any, updates: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Each ``(filter, update)`` as an ``update_one``, in one ``bulk_write``: one round trip on
    MongoDB, one transaction on the embedded store. One by one on mongomock, whose bulk builder
    refuses what pymongo's ``UpdateOne`` passes it (``sort``)."""
    if not updates:
        return
    if type(collection).__module__.startswith("mongomock"):
        for flt, update in updates:
            collection.update_one(flt, update)
        return
    collection.bulk_write([UpdateOne(flt, update) for flt, update in updates], ordered=False)


def insert_together(database: Any, groups: list[tuple[str, list[dict[str, Any]]]]) -> bool:
    """Insert every document of every ``(collection name, documents)`` as one write, all or none:
    one transaction on the embedded store (``Database.insert_together``). False when nothing was
    written: a document's ``_id`` (or a unique key) was taken, or the store is MongoDB (or
    mongomock), where this would take a multi-document transaction, so a replica set; the caller
    then writes them its own way, one collection after another."""
    if _embedded(database) is None:
        return False
    try:
        database.insert_together(groups)
    except DuplicateKeyError:
        return False
    return True


def _embedded(database: Any) -> Any:
    """The embedded store's client of ``database``; None on MongoDB (or mongomock)."""
    if config.settings().MONGO_URI:
        return None
    from goalhub.sqlite_store import Database  # deferred: loaded already wherever the embedded store is open

    return database.client if isinstance(database, Database) else None


def reset() -> None:
    """Forget opened databases (tests switch GOALHUB_HOME between cases)."""
    _cache.clear()
