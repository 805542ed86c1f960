"""The one store opener: a pymongo-style database for everything goalhub keeps.

``GOALHUB_MONGO_URI`` set to ``mongodb://...`` (or ``mongodb+srv://``) gives pymongo on a
real MongoDB. Unset, it gives the embedded on-disk store (``goalhub.sqlite_store``, SQLite
with real indexes and cross-process atomic operations) under ``GOALHUB_HOME``.
``mongomock://`` gives an in-memory mongomock database, for fast unit tests only.
Receivers and tasks use nothing but the pymongo API on what ``get_database()`` returns.
"""

from __future__ import annotations

import os
from typing import Any

from goalhub import config, retention

# Indexes every backend gets; plugins declare their own through ``ensure_index``.
INDEXES: dict[str, list[tuple[str, dict]]] = {
    "goals": [("conditions.session_id", {}), ("metadata.user_id", {}), ("_cls", {})],
    "sessions": [("user", {}), ("active", {})],
    "outcomes": [("goal_id", {}), ("event_id", {}), ("status", {})],
    "events": [("goal_id", {})],
    "outbound": [("kind", {}), ("goal_id", {})],
}

_cache: dict[str, tuple[int, Any]] = {}


def open_database(uri: str | None = None) -> Any:
    """Open the configured database (a new client each call; see ``get_database``)."""
    uri = uri if uri is not None else config.mongo_uri()
    name = config.mongo_db_name()
    if uri and uri.startswith(("mongodb://", "mongodb+srv://")):
        import pymongo

        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000, tz_aware=False)
        database = client.get_default_database(default=name)
    elif uri and uri.startswith("mongomock://"):
        import mongomock

        database = mongomock.MongoClient()[name]
    elif uri:
        raise ValueError(f"GOALHUB_MONGO_URI must be mongodb://, mongodb+srv:// or mongomock://, not {uri!r}")
    else:
        from goalhub.sqlite_store import SQLiteClient

        database = SQLiteClient(config.home() / "store")[name]
    for collection, indexes in INDEXES.items():
        for keys, options in indexes:
            database[collection].create_index(keys, **options)
    retention.ensure_indexes(database)  # stored_at: TTL indexes, or the embedded store's purge
    return database


def get_database() -> Any:
    """The process's database, opened once per process (RQ forks: a child opens its own)."""
    key = f"{config.mongo_uri() or ''}|{config.home()}"
    cached = _cache.get(key)
    if cached and cached[0] == os.getpid():
        return cached[1]
    database = open_database()
    _cache[key] = (os.getpid(), database)
    return database


def reset() -> None:
    """Forget opened databases (tests switch GOALHUB_HOME between cases)."""
    _cache.clear()
