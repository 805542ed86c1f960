"""Embedded on-disk document store that speaks the pymongo API, backed by one SQLite file.

Why not montydb: it loses ``$inc`` updates across processes and scans the collection on every
query. Here every write is one ``BEGIN IMMEDIATE`` transaction (atomic across processes, WAL
journal), documents are BSON blobs under a real primary key on ``_id``, and every ``create_index``
is a real SQLite index over a side table of encoded keys, kept in the same transaction.
Matching, updates and projections are mongomock's, so there is no second Mongo dialect to keep.

It never fails silently: it does what pymongo does on MongoDB, or raises an error naming the
method or the argument it does not support (``collation=``, ``array_filters=``, ``aggregate``,
a session, a TTL index, ...). A ``hint`` is taken when it names an index whose use cannot
change the answer (MongoDB answers the same through it); an unknown index is MongoDB's error.
"""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import itertools
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import bson
import mongomock
from bson import ObjectId
from bson.decimal128 import Decimal128
from mongomock.filtering import NOTHING, filter_applies, iter_key_candidates, resolve_sort_key
from pymongo import ReturnDocument
from pymongo.collection import Collection as _PymongoCollection
from pymongo.cursor import Cursor as _PymongoCursor
from pymongo.database import Database as _PymongoDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, InvalidOperation, OperationFailure, WriteError
from pymongo.mongo_client import MongoClient as _PymongoClient
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

__all__ = ["SQLiteClient", "Database", "Collection", "Cursor"]

DEFAULT_FILENAME = "goalhub.sqlite3"  # used when the client is given a directory
OPEN_WAIT = 60.0  # seconds a new connection tries again while the locks it needs are taken
_LOCKED = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})  # primary result codes
BULK_OPS = 500  # ``bulk_write``'s ops per transaction: the write lock is held for one such batch
# Seconds a queued writer (``queue_writers``) asks for the writers file without sleeping before
# it sleeps on it: about one transaction's hold (0.1 ms with 2 pool workers). Two pool workers
# hand the lock to each other about 13 times a goal, and one that slept was woken and scheduled
# only after its turn had come (README, "The pool of non-forking workers").
QUEUE_SPIN = 150e-6
_FILE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}

# colls rows are never deleted (drop sets live = 0), so a cid cached by any process stays valid
# (one made by a write that is undone is forgotten with it: ``SQLiteClient._atomic``).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS colls (cid INTEGER PRIMARY KEY, db TEXT NOT NULL, name TEXT NOT NULL,
    live INTEGER NOT NULL DEFAULT 1, UNIQUE (db, name));
CREATE TABLE IF NOT EXISTS indexes (cid INTEGER NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL,
    PRIMARY KEY (cid, name));
CREATE TABLE IF NOT EXISTS docs (rid INTEGER PRIMARY KEY, cid INTEGER NOT NULL, id BLOB NOT NULL,
    data BLOB NOT NULL, UNIQUE (cid, id));
CREATE INDEX IF NOT EXISTS docs_cid ON docs (cid);
CREATE TABLE IF NOT EXISTS idx (cid INTEGER NOT NULL, iname TEXT NOT NULL, key BLOB NOT NULL,
    rid INTEGER NOT NULL, PRIMARY KEY (cid, iname, key, rid)) WITHOUT ROWID;
"""
_ADD_ENTRY = "INSERT INTO idx (cid, iname, key, rid) VALUES (?, ?, ?, ?)"
_DROP_ENTRY = "DELETE FROM idx WHERE cid = ? AND iname = ? AND key = ? AND rid = ?"
# ``idx`` has no index on ``rid``: a document's entries are deleted by their keys, computed from
# the document as an update computes the keys it moves. Releases before 2026-12-04 made one
# (``idx_rid``, their deletes go through it), which cost every entry a second b-tree insert
# (README, "The embedded store"). A store they made keeps it, and works the same with it, until
# ``drop_rid_index`` (``goalhub store-upgrade``, with their processes stopped: without it their
# deletes scan ``idx``). A process of such a release makes it again on a store without it.

# ---------------------------------------------------------------- key encoding
_EPOCH = dt.datetime(1970, 1, 1)
_MS = dt.timedelta(milliseconds=1)
_SCALARS = (type(None), bool, int, float, str, ObjectId, dt.datetime, Decimal128)  # index-answerable


def _component(value: Any) -> bytes:
    """A type-tagged key: equal for Mongo-equal scalars (1 == 1.0), distinct across types ("1" != 1)."""
    if value is None or value is NOTHING:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x08" + (b"1" if value else b"0")
    if isinstance(value, (int, float, Decimal128, Decimal)):
        num = value.to_decimal() if isinstance(value, Decimal128) else value
        if isinstance(num, int):
            return b"\x10" + str(num).encode()
        if isinstance(num, Decimal) and num.is_finite() and num == num.to_integral_value():
            return b"\x10" + str(int(num)).encode()
        f = float(num)
        return b"\x10" + (str(int(f)) if math.isfinite(f) and f.is_integer() else repr(f)).encode()
    if isinstance(value, str):
        return b"\x02" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, ObjectId):
        return b"\x07" + value.binary
    if isinstance(value, dt.datetime):
        return b"\x09" + str((_norm(value) - _EPOCH) // _MS).encode()
    return b"\xff" + bson.encode({"v": value})  # embedded documents etc.: their exact BSON


def _esc(part: bytes) -> bytes:
    # After escaping, b"\x00" only separates parts, so a prefix range on the first part is exact.
    return part.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")


def _is_mapping(value: Any, mutable: bool = False) -> bool:
    """``isinstance(value, Mapping)`` (or ``MutableMapping``), a plain dict answered without the
    ABC machinery: in a freshly forked work-horse its first use costs page faults on every call site."""
    return type(value) is dict or isinstance(value, MutableMapping if mutable else Mapping)


_ID_SCALARS = frozenset({str, ObjectId, int, float})  # bool and None left to mongomock


def _by_id(flt: Mapping) -> bool:
    """Whether ``flt`` is ``{"_id": <str, ObjectId or number>}``: the primary key's type-tagged
    value then matches exactly what Mongo's equality matches."""
    return len(flt) == 1 and type(flt.get("_id")) in _ID_SCALARS


_PLAIN = frozenset({str, int, float, bool, type(None), bytes, ObjectId})


def _norm(value: Any) -> Any:
    """Compare like BSON does: aware datetimes become naive UTC, everything is cut to milliseconds."""
    kind = type(value)
    if kind in _PLAIN:  # most values: no isinstance() walk through the ABCs
        return value
    if kind is dict:  # plain values kept without a call each
        return {k: v if type(v) in _PLAIN else _norm(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _PLAIN else _norm(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if _is_mapping(value):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def _filter(flt: Any) -> dict:
    if flt is None:
        return {}
    if not _is_mapping(flt):
        raise TypeError("filter must be an instance of dict")
    return _norm(flt)


@dataclass(frozen=True, eq=False)  # identity hash: used as a dict key
class _Index:
    name: str
    key: tuple[tuple[str, Any], ...]
    unique: bool
    sparse: bool
    partial: dict | None
    options: dict

    @cached_property
    def fields(self) -> list[str]:
        return [f for f, _ in self.key]

    @cached_property
    def _path(self) -> tuple[str, ...] | None:
        """The index's one field as a path (``entries``'s fast case); None for a compound index."""
        return tuple(self.key[0][0].split(".")) if len(self.key) == 1 else None

    def entries(self, doc: Mapping) -> set[bytes]:
        """Keys this document contributes: one per array element, missing fields as null (like Mongo)."""
        if self.partial is not None and not filter_applies(self.partial, doc):
            return set()
        if (path := self._path) is not None:
            # The common case without mongomock's path walk: one field reached through embedded
            # documents only, holding a scalar or nothing. An array, a tuple or a document on
            # the way or at the end, or any other mapping type, takes the general way below.
            value: Any = doc
            for part in path:
                if type(value) is not dict:
                    break
                value = value.get(part, NOTHING)
                if value is NOTHING:
                    break
            else:
                if type(value) in _PLAIN:
                    return {_esc(_component(value)) + b"\x00"}
            if value is NOTHING:
                return set() if self.sparse else {_esc(_component(None)) + b"\x00"}
        parts: list[set[bytes]] = []
        missing = True
        for field in self.fields:
            comps: set[bytes] = set()
            for value in iter_key_candidates(field, doc):
                missing &= value is NOTHING
                if isinstance(value, (list, tuple)):
                    comps.update(_component(v) for v in value if not isinstance(v, (list, tuple)))
                    comps.update([] if value else [b"\x06"])  # [] is "undefined" in Mongo indexes
                else:
                    comps.add(_component(value))
            parts.append(comps or {_component(None)})
        if self.sparse and missing:
            return set()
        return {b"".join(_esc(c) + b"\x00" for c in combo) for combo in itertools.product(*parts)}

    def key_value(self, doc: Mapping) -> dict:
        return {f: next(iter(iter_key_candidates(f, doc)), None) for f in self.fields}

    def info(self) -> dict:
        flags = {"unique": self.unique, "sparse": self.sparse, "partialFilterExpression": self.partial}
        return {"v": 2, "key": list(self.key), **self.options, **{k: v for k, v in flags.items() if v}}


def _index_key(keys: str | Iterable | Mapping, direction: Any = 1) -> list[tuple[str, Any]]:
    if isinstance(keys, str):
        return [(keys, direction)]
    if _is_mapping(keys):
        return list(keys.items())
    return [(k, direction) if isinstance(k, str) else (k[0], k[1]) for k in keys]


# ---------------------------------------------------------------- query planning
def _eq_values(cond: Any) -> list | None:
    """The values an equality / $eq / $in condition allows, or None when an index can't answer it."""
    if _is_mapping(cond):
        if not cond or not all(str(k).startswith("$") for k in cond):
            return None  # embedded-document equality: rare, scan
        if "$eq" in cond:
            vals = [cond["$eq"]]
        elif len(cond) == 1 and cond.get("$exists") is False:
            vals = [None]  # a missing field's key is null's (not in a sparse index: checked there)
        elif isinstance(cond.get("$in"), (list, tuple)):
            vals = list(cond["$in"])
        else:
            return None
    else:
        vals = [cond]
    return vals if all(isinstance(v, _SCALARS) for v in vals) else None


def _equalities(flt: Mapping) -> list[tuple[str, list]]:
    out: list[tuple[str, list]] = []
    for key, cond in flt.items():
        if key == "$and" and isinstance(cond, list):
            for sub in cond:
                out.extend(_equalities(sub) if _is_mapping(sub) else [])
        elif not key.startswith("$") and (vals := _eq_values(cond)) is not None:
            out.append((key, vals))
    return out


def _datetime_range(cid: int, ix: _Index, cond: Any) -> tuple[str, list] | None:
    """The rids under ``ix`` (an index whose first field ``cond`` is on) of a superset of the
    documents ``cond`` (``{"$lt"|"$lte": <datetime>, ...}``) matches: what ``retention.purge``
    asks. A datetime's key is its milliseconds since 1970 in decimal, so keys of as many digits
    as the bound's sort as their times do: one key range holds them (and the negative ones),
    SQLite comparing each one's number; a shorter number sorts anywhere, so those that sort
    above the bound (times before 2001 against today's) are found by a second range, read in
    SQLite alone. Both are rechecked against the filter, as every candidate is."""
    if not _is_mapping(cond):
        return None
    bounds = [v for k, v in cond.items() if k in ("$lt", "$lte") and isinstance(v, dt.datetime)]
    if not bounds:
        return None
    digits = _component(min(bounds, key=_norm))[1:]  # sub-millisecond parts: $lt is kept as <=
    if not digits.isdigit():
        return None  # a bound before 1970: rare, scan
    low, high = b"\x09", b"\x0a"  # every datetime key of the first field
    top = low + digits + b"\x01"  # above every key of exactly the bound's number
    number = "CAST(substr(i.key, 2, instr(i.key, X'00') - 2) AS INTEGER)"
    return ("SELECT i.rid FROM idx AS i WHERE i.cid = ? AND i.iname = ? AND i.key >= ? AND i.key < ? "
            f"AND {number} <= ? UNION ALL "
            "SELECT i.rid FROM idx AS i WHERE i.cid = ? AND i.iname = ? AND i.key >= ? AND i.key < ? "
            "AND substr(i.key, 2, 1) != '-' AND instr(i.key, X'00') < ?",
            [cid, ix.name, low, top, int(digits), cid, ix.name, top, high, len(digits) + 2])


# ---------------------------------------------------------------- borrowed mongomock semantics
_tls = threading.local()


def _scratch() -> mongomock.Collection:
    """A private in-memory collection per thread and process (rebuilt after a fork)."""
    if getattr(_tls, "pid", None) != os.getpid():
        _tls.coll, _tls.pid = mongomock.MongoClient()["scratch"]["docs"], os.getpid()
    return _tls.coll


def _apply(doc: dict | None, flt: Mapping, update: Any, replace: bool) -> dict:
    """Run the update on one document through mongomock; doc None means: build the upsert."""
    if doc is not None and not replace and (fast := _apply_simple(doc, update)) is not None:
        return fast
    if doc is None and not replace and _by_id(flt) and (fast := _apply_simple({"_id": flt["_id"]}, update)) is not None:
        return fast  # an upsert by _id alone starts from that _id (the ledger's first entry of a goal)
    scratch = _scratch()
    scratch.drop()
    try:
        if doc is not None:
            scratch.insert_one(doc)
        if replace and doc is not None:
            # The document matched already: a replacement keeps its _id. The filter is not that
            # _id ({"_id": {"$gt": 1}} names no value), and mongomock would take it for one.
            flt = {"_id": doc["_id"]}
        (scratch.replace_one if replace else scratch.update_one)(flt, update, upsert=doc is None)
        return scratch.find_one()
    finally:
        scratch.drop()


def _apply_simple(doc: dict, update: Mapping) -> dict | None:
    """The common update without mongomock: ``$set``/``$inc``/``$unset`` of fields of an existing
    document (goalhub's outcome and outbound bookkeeping, and the plugins' bindings), dotted paths
    through embedded documents included, or the ledger's ``$addToSet`` (``_add_to_set_simple``). None: anything else, left to mongomock (a path through an
    array or a non-document, ``_id``, two paths that overlap, a non-number ``$inc``...), so
    semantics and errors stay its."""
    if update.keys() == {"$addToSet"}:
        return _add_to_set_simple(doc, update["$addToSet"])
    if not update.keys() <= {"$set", "$inc", "$unset"}:
        return None
    paths: list[tuple[str, ...]] = []
    dotted = False
    for fields in update.values():
        if not _is_mapping(fields):
            return None
        for name in fields:
            if type(name) is not str or not name:
                return None
            if "." not in name:
                if not _plain_top_level(name):
                    return None
                paths.append((name,))
                continue
            parts = tuple(name.split("."))
            dotted = True
            if parts[0] == "_id" or any(not p or p.startswith("$") or p.isdigit() for p in parts):
                return None
            paths.append(parts)
    if len(paths) > 1:
        if not dotted:  # top-level names overlap only by being the same name twice
            if len(set(paths)) < len(paths):
                return None
        else:
            ordered = sorted(paths)
            if any(b[:len(a)] == a for a, b in zip(ordered, ordered[1:], strict=False)):
                return None  # one path inside another: Mongo's conflict error, mongomock's to raise
    new = dict(doc)
    for operator, fields in update.items():
        for name, value in fields.items():
            if operator == "$set" and "." not in name:  # the common case: a top-level field set
                new[name] = value if type(value) in _PLAIN else copy.deepcopy(value)
                continue
            *parents, leaf = name.split(".")
            target: dict | None = new
            for part in parents:  # copy the embedded documents on the way: ``doc`` stays as it was
                child = target.get(part)
                if child is None and part not in target and operator != "$unset":
                    child = {}
                elif not isinstance(child, dict):
                    if operator == "$unset" and part not in target:
                        target = None  # nothing there to unset
                        break
                    return None
                target[part] = child = dict(child)
                target = child
            if target is None:
                continue
            if operator == "$set":
                target[leaf] = copy.deepcopy(value)
            elif operator == "$unset":
                target.pop(leaf, None)
            else:
                current = target.get(leaf, 0)
                if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, current)):
                    return None
                target[leaf] = current + value
    return new


def _plain_top_level(name: str) -> bool:
    """Whether ``name`` is a top-level field the fast paths may write: not ``_id``, no path, no
    operator, no array index."""
    return bool(name) and "." not in name and name != "_id" and name[0] != "$" and not name.isdigit()


def _add_to_set_simple(doc: dict, fields: Any) -> dict | None:
    """``$addToSet`` of one string to a top-level array, or to a field not there yet (the ledger's
    ``done``, one entry per finished receiver: through mongomock it cost twice the outcome's own
    update). None: anything else (``$each``, a non-string, a path, a field that is not an array)."""
    if not _is_mapping(fields) or len(fields) != 1:
        return None
    ((name, value),) = fields.items()
    if type(name) is not str or not _plain_top_level(name) or type(value) is not str:
        return None
    current = doc.get(name, _ABSENT)
    if current is not _ABSENT and type(current) is not list:
        return None
    new = dict(doc)  # shares the array when it already holds the value: unchanged, not rewritten
    if current is _ABSENT:
        new[name] = [value]
    elif value not in current:  # a string equals only an equal string, in Python as in BSON
        new[name] = [*current, value]
    return new


def _same_root(old: Mapping, new: Mapping, field: str) -> bool:
    """Whether ``field``'s top-level value is the very same object in both documents (or absent
    from both): the fast update path shares what it did not change, so the field is unchanged."""
    root = field.split(".", 1)[0]
    return old.get(root, _ABSENT) is new.get(root, _ABSENT)


_ABSENT = object()


def _project_simple(doc: dict, projection: Any) -> dict | None:
    """An inclusion projection of top-level fields without mongomock (None: anything else)."""
    names = projection.items() if _is_mapping(projection) else (
        [(name, 1) for name in projection] if isinstance(projection, list | tuple) else None)
    if not names:
        return None
    keep, with_id = set(), True
    for name, flag in names:
        if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
            return None
        included = flag is True or (type(flag) in (int, float) and flag == 1)
        if name == "_id":
            if not included and not (flag is False or (type(flag) in (int, float) and flag == 0)):
                return None
            with_id = included
        elif included:
            keep.add(name)
        else:
            return None
    return {k: v for k, v in doc.items() if k in keep or (k == "_id" and with_id)}


def _project(doc: dict | None, projection: Any) -> dict | None:
    if doc is None or projection is None:
        return doc
    if (simple := _project_simple(doc, projection)) is not None:
        return simple
    fields = dict(projection) if _is_mapping(projection) else list(projection)
    return _scratch()._copy_only_fields(doc, fields, dict)


def _check_update(update: Any) -> None:
    if not _is_mapping(update) or not update:
        raise ValueError("update must be a non-empty document")
    if not next(iter(update)).startswith("$"):
        raise ValueError("update only works with $ operators")


def _check_replacement(replacement: Any) -> None:
    if not _is_mapping(replacement):
        raise TypeError("replacement must be an instance of dict")
    if any(str(k).startswith("$") for k in replacement):
        raise ValueError("replacement can not include $ operators")


class _BulkRecorder:
    """What pymongo's write models add to a bulk (their ``_add_to_bulk`` protocol), as calls of
    this store's methods: (kind, (suffix, filter, doc...), options)."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, tuple, dict]] = []

    def add_insert(self, document: MutableMapping) -> None:
        self.ops.append(("insert", (document,), {}))

    def add_update(self, selector: Mapping, update: Mapping, multi: bool, upsert: bool, **options: Any) -> None:
        _check_update(update)
        self.ops.append(("update", ("_many" if multi else "_one", selector, update, upsert), _given(options)))

    def add_replace(self, selector: Mapping, replacement: Mapping, upsert: bool, **options: Any) -> None:
        _check_replacement(replacement)
        self.ops.append(("replace", ("_one", selector, replacement, upsert), _given(options)))

    def add_delete(self, selector: Mapping, limit: int, **options: Any) -> None:
        self.ops.append(("delete", ("_one" if limit == 1 else "_many", selector), _given(options)))


def _given(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a write model was given (pymongo passes every one, mostly None)."""
    return {name: value for name, value in options.items() if not _unused(value)}


# ---------------------------------------------------------------- what is supported
# Options that change nothing this store returns (no time limits, no batches, no validators).
_NO_EFFECT = frozenset({"comment", "max_time_ms", "maxTimeMS", "batch_size", "bypass_document_validation"})
# pymongo's other options of the collection methods: refused by name when given a value.
_PYMONGO_OPTIONS = frozenset({
    "collation", "array_filters", "let", "session", "no_cursor_timeout", "cursor_type", "allow_partial_results",
    "oplog_replay", "max_scan", "max", "min", "return_key", "show_record_id", "snapshot", "allow_disk_use",
    "max_await_time_ms", "modifiers", "manipulate", "projection", "sort", "skip", "limit", "upsert", "hint",
})


def unsupported(what: str) -> NotImplementedError:
    return NotImplementedError(f"goalhub's embedded store does not support {what}")


def _unused(value: Any) -> bool:
    """pymongo's default for an option (None, False, 0): the caller did not ask for it."""
    return value is None or value is False or (type(value) is int and value == 0)


def _refuse_method(owner: str, name: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise unsupported(f"{owner}.{name}")

    refuse.__name__ = name
    return refuse


# ---------------------------------------------------------------- client / database
class WriteStats:
    """This process's write transactions since it last took them: how many, the seconds they
    waited for the store's write lock (their turn on ``<store>.writers``, then SQLite's busy
    handler in ``BEGIN IMMEDIATE``) and the seconds they held it, to the end of their ``COMMIT``
    or ``ROLLBACK``. The lock is the store's one writer: every process's held seconds over the
    same wall time say how busy it is (``goalhub.metrics``: ``goalhub_store_write_held_seconds_total``).
    A commit that takes the WAL past the connection's ``wal_autocheckpoint`` runs a checkpoint
    after it let the lock go, inside the same ``COMMIT`` call: its held seconds include that
    (with a pool, the API's commits at 1,000 pages: about 0.2 ms a commit in a 2-worker run).
    A forked child starts from nothing: what its parent wrote is its parent's to report."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a new one in a child: another thread may hold the parent's
        self._taken = (0, 0.0, 0.0)

    def add(self, asked: float, locked: float) -> None:
        """One transaction: asked for the lock at ``asked``, had it from ``locked`` until now
        (``time.perf_counter``)."""
        now = time.perf_counter()
        with self._lock:
            count, waited, held = self._taken
            self._taken = (count + 1, waited + locked - asked, held + now - locked)

    def take(self) -> tuple[int, float, float]:
        """(transactions, seconds waited, seconds held) since the last ``take``."""
        with self._lock:
            taken, self._taken = self._taken, (0, 0.0, 0.0)
        return taken


WRITES = WriteStats()
os.register_at_fork(after_in_child=WRITES._reset)


class SQLiteClient:
    """Like ``pymongo.MongoClient``; one SQLite file holds every database."""

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        if p.is_dir() or p.suffix not in _FILE_SUFFIXES:
            p = p / DEFAULT_FILENAME
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[tuple[int, threading.Thread, sqlite3.Connection]] = []  # (pid, opener, conn)
        self._generation = 0
        self._dbs: dict[str, Database] = {}
        # WAL pages at which a commit checkpoints (SQLite's ``wal_autocheckpoint``; None: its
        # default, 1000), for the connections this process opens from now on.
        self.autocheckpoint: int | None = None
        # Whether this process's writers wait their turn on ``<store>.writers`` (``flock``, woken
        # by the kernel when it is let go) before ``BEGIN IMMEDIATE`` (see ``_write``).
        self.queue_writers = False
        self._queue_fds: dict[sqlite3.Connection, int] = {}  # a connection's descriptor of that file

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection; a new one after a fork (RQ work-horses) or close()."""
        if getattr(self._local, "key", None) == (os.getpid(), self._generation):
            return self._local.conn
        # SQLite forbids using a connection across fork: inherited ones stay untouched in _conns.
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._prepare(conn)
        with self._lock:  # close the connections of finished threads (thread-per-request servers)
            dead = [e for e in self._conns if e[0] == os.getpid() and not e[1].is_alive()]
            self._conns = [e for e in self._conns if e not in dead]
            self._conns.append((os.getpid(), threading.current_thread(), conn))
        for _, _, old in dead:
            self._close(old)
        self._local.conn, self._local.key = conn, (os.getpid(), self._generation)
        self._local.made = []  # collections this thread's open transaction made (``_atomic``)
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """A new connection's settings, and the schema on a new store. SQLite can refuse the locks
        some of it needs at once, without waiting in its busy handler, while other processes open
        the same store: a worker started beside the API and the scheduler on a new home crashed
        so, "database is locked" at ``PRAGMA journal_mode = WAL``. So it is tried again, with
        short pauses, for up to ``OPEN_WAIT`` seconds, on a lock error only."""
        deadline, pause = time.monotonic() + OPEN_WAIT, 0.005
        while True:
            try:
                conn.execute("PRAGMA busy_timeout = 60000")
                conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
                conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: survives process crashes, no fsync per op
                if self.autocheckpoint is not None:
                    conn.execute(f"PRAGMA wal_autocheckpoint = {int(self.autocheckpoint)}")
                if not self._has(conn, "idx"):
                    self._lay_out(conn)
                return
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _LOCKED or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 0.1)

    @staticmethod
    def _lay_out(conn: sqlite3.Connection) -> None:
        """A new store's tables (each ``IF NOT EXISTS``: another process may make them at once)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _has(conn: sqlite3.Connection, name: str) -> bool:
        """Whether the file has the table or index ``name``."""
        return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None

    def has_rid_index(self) -> bool:
        """Whether this store still has the ``idx_rid`` index that releases before 2026-12-04 made."""
        return self._has(self._conn(), "idx_rid")

    def drop_rid_index(self) -> bool:
        """Drop ``idx_rid`` (see ``_SCHEMA``); whether there was one. Only with no process of such a
        release running: its deletes would then scan every index entry, holding the write lock."""
        with self._write() as conn:
            found = self._has(conn, "idx_rid")
            conn.execute("DROP INDEX IF EXISTS idx_rid")
        return found

    def _close(self, conn: sqlite3.Connection) -> None:
        conn.close()
        if (fd := self._queue_fds.pop(conn, -1)) >= 0:
            os.close(fd)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One atomic read-modify-write: IMMEDIATE takes the write lock before the first read.

        With ``queue_writers``, the writer first takes ``<store>.writers`` (``flock``): SQLite's
        busy handler sleeps 1, 2, 5, 10 ms... between tries while a write holds its lock for about
        0.1-0.3 ms, so two pool workers writing by turns left the cores idle; the kernel wakes
        the next writer on the file as soon as the last lets go, and a writer asks again without
        sleeping for up to ``QUEUE_SPIN`` before it sleeps there (``_take_turn``). SQLite's lock still makes a
        write atomic (writers that do not queue, the API's, take it as before). A writer frozen
        while it holds the file holds the others until it is killed: only processes whose work
        is bounded by an alarm (RQ's job timeout) queue."""
        conn = self._conn()
        if conn.in_transaction:  # a write inside this thread's batch (``bulk_write``): a savepoint
            # of its transaction, so a write that fails is undone alone, the batch's others kept
            yield from self._atomic(conn, "SAVEPOINT write", ("ROLLBACK TO write", "RELEASE write"), "RELEASE write")
            return
        fd = self._queue_fd(conn) if self.queue_writers else -1
        asked = time.perf_counter()
        try:
            if fd >= 0:  # let go in any case below: a job's timeout may land right after it is taken
                _take_turn(fd, asked)
            yield from self._atomic(conn, "BEGIN IMMEDIATE", ("ROLLBACK",), "COMMIT", asked)
        finally:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_UN)  # a file this descriptor does not hold: nothing to do

    def _atomic(self, conn: sqlite3.Connection, begin: str, undo: tuple[str, ...], end: str,
                asked: float | None = None) -> Iterator[sqlite3.Connection]:
        """``begin``, the caller's statements, then ``end`` (``undo`` on an exception, ``end``'s
        own included). A transaction (``asked``: when its writer asked for the lock) is counted
        in ``WRITES``. A collection made inside what is undone is forgotten by this process
        (``Collection._cid``): its row is gone, and SQLite gives its id to the next one made."""
        made = self._local.made
        mark = len(made)
        conn.execute(begin)
        locked = time.perf_counter()
        try:
            yield conn
            conn.execute(end)
        except BaseException:
            for coll in made[mark:]:
                coll._cid_cache = None
            del made[mark:]
            if conn.in_transaction:  # SQLite rolled back itself on some errors (SQLITE_FULL)
                for statement in undo:
                    conn.execute(statement)
            raise
        finally:
            if asked is not None:
                WRITES.add(asked, locked)
        if not conn.in_transaction:  # committed: what it made stays made
            made.clear()

    def _queue_fd(self, conn: sqlite3.Connection) -> int:
        """The connection's own descriptor of ``<store>.writers`` (one per connection, so per
        thread: ``flock`` orders open files, so the threads of one process queue too)."""
        fd = self._queue_fds.get(conn, -1)
        if fd < 0:
            fd = os.open(f"{self.path}.writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with self._lock:
                self._queue_fds[conn] = fd
        return fd

    def checkpoint(self) -> tuple[int, int]:
        """Copy what the WAL holds back into the database file, as far as readers allow, without
        waiting for any lock (``PRAGMA wal_checkpoint(PASSIVE)``): (frames in the WAL, frames
        copied so far)."""
        _, frames, copied = self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied

    def __getitem__(self, name: str) -> Database:
        return self.get_database(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if hasattr(_PymongoClient, name):  # a pymongo method this store lacks, not a database
            return _refuse_method("MongoClient", name)
        return self.get_database(name)

    def get_database(self, name: str) -> Database:
        if name not in self._dbs:
            self._dbs[name] = Database(self, name)
        return self._dbs[name]

    def close(self) -> None:
        """Close this process's connections; the client reopens on next use, like MongoClient."""
        with self._lock:
            mine = [c for p, _, c in self._conns if p == os.getpid()]
            self._conns = [e for e in self._conns if e[0] != os.getpid()]
            self._generation += 1
        for conn in mine:
            self._close(conn)

    def __enter__(self) -> SQLiteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_turn(fd: int, asked: float) -> None:
    """Take the writers file ``fd`` (``flock``): asked again without sleeping until
    ``QUEUE_SPIN`` after ``asked``, then waited for asleep."""
    until = asked + QUEUE_SPIN
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.perf_counter() >= until:
                break
    fcntl.flock(fd, fcntl.LOCK_EX)


class Database:
    def __init__(self, client: SQLiteClient, name: str) -> None:
        self.client = client
        self.name = name
        self._colls: dict[str, Collection] = {}

    def __getitem__(self, name: str) -> Collection:
        return self.get_collection(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if hasattr(_PymongoDatabase, name):  # a pymongo method this store lacks, not a collection
            return _refuse_method("Database", name)
        return self.get_collection(name)

    def get_collection(self, name: str) -> Collection:
        if name not in self._colls:
            self._colls[name] = Collection(self, name)
        return self._colls[name]

    def list_collection_names(self) -> list[str]:
        sql = "SELECT name FROM colls WHERE db = ? AND live = 1 ORDER BY name"
        return [r[0] for r in self.client._conn().execute(sql, (self.name,))]

    def drop_collection(self, name: str | Collection) -> None:
        coll = self.get_collection(name if isinstance(name, str) else name.name)
        with self.client._write() as conn:
            if (cid := coll._cid(conn)) is not None:
                for table in ("idx", "docs", "indexes"):
                    conn.execute(f"DELETE FROM {table} WHERE cid = ?", (cid,))
                conn.execute("UPDATE colls SET live = 0 WHERE cid = ?", (cid,))

    def insert_together(self, groups: Sequence[tuple[str, Sequence[MutableMapping]]]) -> None:
        """Insert every document of every ``(collection name, documents)`` in one transaction: all
        of them, or none (a duplicate key raises ``DuplicateKeyError`` with nothing written). Not
        a pymongo method: on MongoDB this takes a transaction, so a replica set (see
        ``goalhub.store.insert_together``). Each document is given an ``_id`` if it has none,
        as ``insert_many`` does, and is encoded with its index keys before the write lock."""
        colls = []
        for name, documents in groups:
            for doc in documents:
                doc.setdefault("_id", ObjectId())
            if documents:
                docs = [_norm(doc) for doc in documents]
                coll = self.get_collection(name)
                colls.append((coll, docs, coll._insert_plan(docs)))
        with self.client._write() as conn:
            for coll, docs, plan in colls:
                cid, prepared = coll._as_prepared(conn, docs, plan)
                for one in prepared:
                    coll._insert_prepared(conn, cid, one)

    def command(self, cmd: str | Mapping, **kwargs: Any) -> dict:
        name = cmd if isinstance(cmd, str) else next(iter(cmd))
        if given := sorted(k for k, v in kwargs.items() if k not in ("comment", "check") and not _unused(v)):
            raise unsupported(f"{given[0]}= in command")
        if name == "ping":
            return {"ok": 1.0}
        raise OperationFailure(f"no such command: '{name}'", code=59)


# ---------------------------------------------------------------- collection
Row = tuple[int, bytes, dict]  # (rowid, stored BSON, decoded document)
Prepared = tuple[dict, bytes, dict[_Index, set[bytes]]]  # a document to insert, its BSON, its index keys
Diff = tuple[bytes, list[tuple[_Index, set[bytes], set[bytes]]]]  # new BSON; per index: keys gone, keys added


class _Planned(NamedTuple):
    """An update of one document computed before the write lock (``Collection._plan_one``)."""
    cid: int
    indexes: list[_Index]
    row: Row
    new: dict
    diff: Diff


class Collection:
    """Like ``pymongo.collection.Collection``: the operations goalhub uses."""

    def __init__(self, database: Database, name: str) -> None:
        self.database, self.name, self.full_name = database, name, f"{database.name}.{name}"
        self._client = database.client
        self.docs_examined = 0  # documents decoded to answer queries: proves index use in tests
        self._cid_cache: int | None = None
        self._spec_cache: dict[tuple[str, bytes], _Index] = {}
        self._seen_indexes: list[_Index] | None = None  # the last _indexes read (_last_indexes)

    def _cid(self, conn: sqlite3.Connection, create: bool = False) -> int | None:
        if self._cid_cache is None:
            key = (self.database.name, self.name)
            row = conn.execute("SELECT cid FROM colls WHERE db = ? AND name = ?", key).fetchone()
            if row is None and not create:
                return None
            if row is None:  # made by this write: forgotten again if it is undone (``_atomic``)
                self._client._local.made.append(self)
            self._cid_cache = row[0] if row else conn.execute(
                "INSERT INTO colls (db, name) VALUES (?, ?)", key).lastrowid
        if create:  # writes revive a collection dropped meanwhile, possibly by another process
            conn.execute("UPDATE colls SET live = 1 WHERE cid = ? AND live = 0", (self._cid_cache,))
        return self._cid_cache

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(_PymongoCollection, name):
            return _refuse_method("Collection", name)
        raise AttributeError(f"'Collection' object has no attribute {name!r}")

    def _options(self, method: str, options: Mapping[str, Any]) -> None:
        """Take the options that change no answer, check a hint, and refuse everything else by name."""
        for name, value in options.items():
            if name in _NO_EFFECT:
                continue
            if name == "hint":
                self._check_hint(method, value)
            elif name not in _PYMONGO_OPTIONS:
                raise TypeError(f"{method}() got an unexpected keyword argument {name!r}")
            elif not _unused(value):
                raise unsupported(f"{name}= in {method}")

    def _check_hint(self, method: str, hint: Any) -> None:
        """A hint changes which index answers, never the answer, unless the index is sparse or
        partial (it then skips documents): those are refused, an unknown index is MongoDB's error."""
        if hint is None:
            return
        key = None if isinstance(hint, str) else _index_key(hint)
        if key is not None and key and key[0][0] == "$natural":
            return
        if hint in ("_id_",) or key == [("_id", 1)]:
            return
        conn = self._client._conn()
        for ix in self._indexes(conn, self._cid(conn)):
            if (key is None and ix.name == hint) or (key is not None and [tuple(k) for k in ix.key] == key):
                if ix.sparse or ix.partial is not None:
                    raise unsupported(f"hint= naming the sparse or partial index {ix.name!r} in {method}")
                return
        raise OperationFailure("hint provided does not correspond to an existing index", 2)

    def _last_indexes(self, conn: sqlite3.Connection, cid: int) -> list[_Index]:
        """The indexes as this process last read them, for work done before the write lock; the
        writer reads them again under it (``_indexes``) and redoes the work if they changed."""
        return self._seen_indexes if self._seen_indexes is not None else self._indexes(conn, cid)

    def _indexes(self, conn: sqlite3.Connection, cid: int | None) -> list[_Index]:
        out = []
        for name, spec in conn.execute("SELECT name, spec FROM indexes WHERE cid = ? ORDER BY rowid", (cid,)):
            if (name, spec) not in self._spec_cache:
                s = bson.decode(spec)
                self._spec_cache[(name, spec)] = _Index(name, tuple(map(tuple, s["key"])), s["unique"],
                                                        s["sparse"], s.get("partial"), s["options"])
            out.append(self._spec_cache[(name, spec)])
        if cid is not None:
            self._seen_indexes = out
        return out

    # -- reading
    def _plan(self, conn: sqlite3.Connection, cid: int, flt: Mapping) -> tuple[str, list]:
        """SQL for a superset of the matches: by primary key, through an index, or a scan."""
        if _by_id(flt):  # one document by its _id
            return "SELECT rid, data FROM docs WHERE cid = ? AND id = ?", [cid, _component(flt["_id"])]
        found = self._candidates(conn, cid, flt, {}) if flt else None
        if found is None:
            return "SELECT rid, data FROM docs WHERE cid = ? ORDER BY rid", [cid]
        sub, params = found
        if sub is None:  # {"$in": []}
            return "SELECT rid, data FROM docs WHERE 0", []
        # Always "rid IN (subquery)": with a bare IN list SQLite may pick docs_cid to avoid sorting.
        return f"SELECT rid, data FROM docs WHERE rid IN ({sub}) ORDER BY rid", params

    def _candidates(self, conn: sqlite3.Connection, cid: int, flt: Mapping,
                    indexes: dict[str, _Index]) -> tuple[str | None, list] | None:
        """A subquery of the rids of a superset of ``flt``'s matches ((None, []): none can match),
        or None when only a scan can tell: an equality on ``_id`` or on an index's first field, a
        datetime upper bound on one (``_datetime_range``), or an ``$or`` each of whose branches
        has one (their union). ``indexes``: the usable ones by first field, read at first need."""
        equalities = _equalities(flt)
        for field, vals in equalities:
            if field == "_id":
                return (f"SELECT rid FROM docs WHERE cid = ? AND id IN ({','.join('?' * len(vals))})",
                        [cid, *map(_component, vals)])
        if not indexes:
            indexes.update((ix.fields[0], ix) for ix in reversed(self._indexes(conn, cid))
                           if ix.partial is None)  # a partial index may miss matches
        for field, vals in equalities:
            ix = indexes.get(field)
            if ix is not None and vals and not (ix.sparse and None in vals):
                # One key range per value (a prefix range serves compound indexes too).
                params: list = []
                for head in (_esc(_component(v)) for v in vals):
                    params += [head + b"\x00", head + b"\x01"]
                return (f"SELECT i.rid FROM (VALUES {', '.join(['(?, ?)'] * len(vals))}) AS r JOIN idx AS i "
                        "ON i.cid = ? AND i.iname = ? AND i.key >= r.column1 AND i.key < r.column2",
                        [*params, cid, ix.name])
            if ix is not None and not vals:  # {"$in": []}
                return None, []
        for field, cond in flt.items():
            ix = indexes.get(field)
            if ix is not None and (ranged := _datetime_range(cid, ix, cond)) is not None:
                return ranged
        branches = flt.get("$or")
        if isinstance(branches, list) and branches and all(_is_mapping(b) for b in branches):
            subs, params = [], []
            for branch in branches:
                if (found := self._candidates(conn, cid, branch, indexes)) is None:
                    return None
                if found[0] is not None:
                    subs.append(found[0])
                    params += found[1]
            return (" UNION ".join(subs), params) if subs else (None, [])
        return None

    def _matches(self, conn: sqlite3.Connection, flt: Mapping) -> Iterator[Row]:
        if (cid := self._cid(conn)) is None:
            return
        cur = conn.execute(*self._plan(conn, cid, flt))
        by_id = _by_id(flt)  # the primary key matched it exactly: mongomock need not check it again
        try:
            for rid, data in cur:
                self.docs_examined += 1
                doc = bson.decode(data)
                if by_id or filter_applies(flt, doc):
                    yield rid, data, doc
        finally:
            cur.close()

    def _select(self, conn: sqlite3.Connection, flt: Mapping, sort: Any = None, skip: int = 0,
                limit: int | None = None) -> list[Row]:
        it = self._matches(conn, flt)
        stop = skip + limit if limit else None
        if not sort:
            try:
                return list(itertools.islice(it, skip, stop))
            finally:
                it.close()  # finishes the SQLite statement early when the limit was reached
        rows = list(it)
        for key, direction in reversed(_index_key(sort)):  # stable sorts, least significant key first
            rows.sort(key=lambda r, k=key: resolve_sort_key(k, r[2]), reverse=direction < 0)
        return rows[skip:stop]

    def _find(self, flt: Any, projection: Any, sort: Any, skip: int, limit: int | None) -> list[dict]:
        rows = self._select(self._client._conn(), _filter(flt), sort, skip, limit)
        return [_project(doc, projection) for _, _, doc in rows]

    def find(self, filter: Any = None, projection: Any = None, skip: int = 0, limit: int = 0, *, sort: Any = None,
             **options: Any) -> Cursor:
        self._options("find", options)
        return Cursor(self, filter, projection, sort, limit, skip)

    def find_one(self, filter: Any = None, projection: Any = None, skip: int = 0, *, sort: Any = None,
                 **options: Any) -> dict | None:
        options.pop("limit", None)  # like pymongo: find_one returns one document whatever the limit
        self._options("find_one", options)
        if filter is not None and not _is_mapping(filter):
            filter = {"_id": filter}
        docs = self._find(filter, projection, _index_key(sort) if sort else None, skip, 1)
        return docs[0] if docs else None

    def count_documents(self, filter: Mapping, *, limit: int | None = None, skip: int = 0, **options: Any) -> int:
        self._options("count_documents", options)
        if not filter and not limit and not skip:
            return self.estimated_document_count()
        return len(self._select(self._client._conn(), _filter(filter), None, skip, limit))

    def estimated_document_count(self, **options: Any) -> int:
        self._options("estimated_document_count", options)
        conn = self._client._conn()
        cid = self._cid(conn)
        return conn.execute("SELECT COUNT(*) FROM docs WHERE cid = ?", (cid,)).fetchone()[0]

    def aggregate(self, pipeline: Any, **options: Any) -> Any:
        raise unsupported("aggregate (use find, count_documents or distinct, or a MongoDB server)")

    def distinct(self, key: str, filter: Mapping | None = None, **options: Any) -> list:
        self._options("distinct", options)
        out: dict[bytes, Any] = {}  # keyed like the index, so 1 and True stay distinct
        for doc in self._find(filter, None, None, 0, None):
            for value in iter_key_candidates(key, doc):
                for v in value if isinstance(value, list) else [value]:
                    if v is not NOTHING:
                        out.setdefault(_component(v), v)
        return list(out.values())

    # -- writing
    def _dup(self, index: str, key_value: dict) -> DuplicateKeyError:
        msg = f"E11000 duplicate key error collection: {self.full_name} index: {index} dup key: {key_value}"
        return DuplicateKeyError(msg, 11000, {"code": 11000, "errmsg": msg, "keyValue": key_value})

    def _check_unique(self, conn: sqlite3.Connection, cid: int, ix: _Index, keys: Iterable[bytes], rid: int,
                      doc: Mapping) -> None:
        sql = "SELECT 1 FROM idx WHERE cid = ? AND iname = ? AND key = ? AND rid <> ? LIMIT 1"
        if any(conn.execute(sql, (cid, ix.name, k, rid)).fetchone() for k in keys):
            raise self._dup(ix.name, ix.key_value(doc))

    # A write's Python work (encoding, index keys, applying an update) is done before it takes
    # the write lock where it can be: ``_prepared`` and ``_diff`` compute, ``_insert_prepared`` and
    # ``_write_diff`` only run SQL. The lock is held for SQL alone, so writers in other processes
    # wait less (with 2 pool workers they waited about as long as they held it).
    @staticmethod
    def _prepared(doc: dict, indexes: list[_Index]) -> Prepared:
        doc = {"_id": doc["_id"], **doc}  # Mongo stores _id first
        return doc, bson.encode(doc), {ix: ix.entries(doc) for ix in indexes}

    def _insert_prepared(self, conn: sqlite3.Connection, cid: int, prepared: Prepared) -> None:
        doc, data, entries = prepared
        for ix, keys in entries.items():  # check everything before writing anything
            if ix.unique:
                self._check_unique(conn, cid, ix, keys, -1, doc)
        try:
            rid = conn.execute("INSERT INTO docs (cid, id, data) VALUES (?, ?, ?)",
                               (cid, _component(doc["_id"]), data)).lastrowid
        except sqlite3.IntegrityError:
            raise self._dup("_id_", {"_id": doc["_id"]}) from None
        conn.executemany(_ADD_ENTRY,
                         [(cid, ix.name, k, rid) for ix, keys in entries.items() for k in keys])

    def _insert(self, conn: sqlite3.Connection, cid: int, doc: dict, indexes: list[_Index]) -> None:
        self._insert_prepared(conn, cid, self._prepared(doc, indexes))

    def _insert_plan(self, docs: list[dict]) -> tuple[list[_Index], list[Prepared]] | None:
        """Before the write lock: the indexes as last read and ``docs`` prepared for them (None: the
        collection is not made yet)."""
        conn = self._client._conn()
        if (cid := self._cid(conn)) is None:
            return None
        indexes = self._last_indexes(conn, cid)
        return indexes, [self._prepared(doc, indexes) for doc in docs]

    def _as_prepared(self, conn: sqlite3.Connection, docs: list[dict],
                     plan: tuple[list[_Index], list[Prepared]] | None) -> tuple[int, list[Prepared]]:
        """Under the write lock: the collection's id (made if new) and ``docs`` prepared for its
        indexes as they are now: the plan's, unless the indexes changed since."""
        cid = self._cid(conn, create=True)
        indexes = self._indexes(conn, cid)
        if plan is None or plan[0] != indexes:
            return cid, [self._prepared(doc, indexes) for doc in docs]
        return cid, plan[1]

    def _insert_all(self, documents: list[MutableMapping], ordered: bool, collect: bool = True) -> list[dict]:
        """Insert the documents in one transaction; the write errors, as ``BulkWriteError`` lists
        them (``collect``), or the first one raised."""
        docs = [_norm(doc) for doc in documents]
        plan = self._insert_plan(docs)
        errors: list[dict] = []
        with self._client._write() as conn:  # like Mongo, the inserts before a failure are kept
            cid, prepared = self._as_prepared(conn, docs, plan)
            for i, one in enumerate(prepared):
                try:
                    self._insert_prepared(conn, cid, one)
                except DuplicateKeyError as exc:
                    if not collect:
                        raise
                    errors.append({"index": i, "code": 11000, "errmsg": str(exc), "op": documents[i]})
                    if ordered:
                        break
        return errors

    def _diff(self, row: Row, new: dict, indexes: list[_Index]) -> Diff | None:
        """What rewriting ``row`` as ``new`` writes (None: nothing, the same bytes)."""
        _, old_data, old = row
        if new.get("_id") is not old["_id"] and _component(new.get("_id")) != _component(old["_id"]):
            raise WriteError("Performing an update on the path '_id' would modify the immutable field '_id'", 66)
        if (data := bson.encode(new)) == old_data:
            return None
        diffs = []
        for ix in indexes:
            if ix.partial is None and all(_same_root(old, new, field) for field in ix.fields):
                continue  # none of its fields changed: its entries stay as they are
            before, after = ix.entries(old), ix.entries(new)
            diffs.append((ix, before - after, after - before))
        return data, diffs

    def _rewrite(self, conn: sqlite3.Connection, cid: int, row: Row, new: dict, indexes: list[_Index]) -> bool:
        diff = self._diff(row, new, indexes)
        if diff is not None:
            self._write_diff(conn, cid, row[0], new, diff)
        return diff is not None

    def _write_diff(self, conn: sqlite3.Connection, cid: int, rid: int, new: dict, diff: Diff) -> None:
        data, diffs = diff
        for ix, _, added in diffs:
            if ix.unique:
                self._check_unique(conn, cid, ix, added, rid, new)
        conn.execute("UPDATE docs SET data = ? WHERE rid = ?", (data, rid))
        for ix, gone, added in diffs:
            if len(gone) == 1 and len(added) == 1 and conn.execute(  # one key moved: one statement
                    "UPDATE idx SET key = ? WHERE cid = ? AND iname = ? AND key = ? AND rid = ?",
                    (next(iter(added)), cid, ix.name, next(iter(gone)), rid)).rowcount == 1:
                continue
            conn.executemany(_DROP_ENTRY, [(cid, ix.name, k, rid) for k in gone])
            conn.executemany(_ADD_ENTRY,
                             [(cid, ix.name, k, rid) for k in added])
        return True

    def insert_one(self, document: MutableMapping, **options: Any) -> InsertOneResult:
        self._options("insert_one", options)
        if not _is_mapping(document, mutable=True):
            raise TypeError("document must be an instance of dict")
        document.setdefault("_id", ObjectId())  # pymongo also sets _id on the caller's dict
        self._insert_all([document], ordered=True, collect=False)
        return InsertOneResult(document["_id"], True)

    def insert_many(self, documents: Iterable[MutableMapping], ordered: bool = True,
                    **options: Any) -> InsertManyResult:
        self._options("insert_many", options)
        if not (docs := list(documents)):
            raise TypeError("documents must be a non-empty list")
        for doc in docs:
            doc.setdefault("_id", ObjectId())
        if errors := self._insert_all(docs, ordered):
            inserted = errors[0]["index"] if ordered else len(docs) - len(errors)
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": [], "upserted": [], "nInserted": inserted,
                                  "nUpserted": 0, "nMatched": 0, "nModified": 0, "nRemoved": 0})
        return InsertManyResult([d["_id"] for d in docs], True)

    def _modify(self, filter: Any, update: Any, *, replace: bool = False, multi: bool = False,
                upsert: bool = False, sort: Any = None) -> tuple[int, int, Any, dict | None, dict | None]:
        """Update in one transaction: (matched, modified, upserted_id, first doc before, after)."""
        flt, update = _filter(filter), _norm(update)
        if not multi and not sort and (done := self._modify_one(flt, update, replace, upsert)) is not None:
            return done
        matched = modified = 0
        upserted = before = after = None
        with self._client._write() as conn:
            cid = self._cid(conn, create=upsert)
            indexes = self._indexes(conn, cid)
            rows = self._select(conn, flt, sort, 0, None if multi else 1)
            for row in rows:
                new = _apply(row[2], flt, update, replace)
                matched += 1
                modified += self._rewrite(conn, cid, row, new, indexes)
                if before is None:
                    before, after = row[2], new
            if not rows and upsert:
                after = _apply(None, flt, update, replace)
                self._insert(conn, cid, after, indexes)
                upserted = after["_id"]
        return matched, modified, upserted, before, after

    def _modify_one(self, flt: dict, update: Any, replace: bool,
                    upsert: bool) -> tuple[int, int, Any, dict | None, dict | None] | None:
        """One document updated with its new version computed before the write lock, from the
        last committed state (a read never waits). Under the lock, one SQL read checks that the
        document's bytes and the collection's indexes are still what it was computed from: the
        same bytes match the filter and update the same way. None: it could not be done so (the
        document changed meanwhile, or nothing matched and ``upsert``): ``_modify`` does it all
        under the lock. With nothing matched and no upsert, the answer is the read's: 0 matched."""
        plan = self._plan_one(flt, update, replace, upsert)
        if not isinstance(plan, _Planned):
            return plan
        with self._client._write() as conn:
            if not self._write_planned(conn, plan):
                return None  # changed meanwhile: _modify takes the lock again and does it all
        return 1, 1, None, plan.row[2], plan.new

    def _plan_one(self, flt: dict, update: Any, replace: bool,
                  upsert: bool) -> _Planned | tuple[int, int, Any, dict | None, dict | None] | None:
        """``_modify_one``'s work before the lock: the write to make, the answer when there is
        none to make (as of the read), or None (nothing matched and ``upsert``)."""
        conn = self._client._conn()
        if (cid := self._cid(conn)) is None:
            return None
        indexes = self._last_indexes(conn, cid)
        rows = self._select(conn, flt, None, 0, 1)
        if not rows:
            return None if upsert else (0, 0, None, None, None)
        row = rows[0]
        new = _apply(row[2], flt, update, replace)
        if (diff := self._diff(row, new, indexes)) is None:
            return 1, 0, None, row[2], new
        return _Planned(cid, indexes, row, new, diff)

    def _write_planned(self, conn: sqlite3.Connection, plan: _Planned, indexes: list[_Index] | None = None) -> bool:
        """Under the write lock: the planned write, if the document and the indexes (``indexes``,
        read under this lock; None: read them now) are still what it was planned from; False
        (nothing written) if not."""
        if indexes is None:
            indexes = self._indexes(conn, plan.cid)  # (_indexes notes them for _last_indexes)
        if not self._as_planned(conn, plan.row, plan.indexes, indexes):
            return False
        self._write_diff(conn, plan.cid, plan.row[0], plan.new, plan.diff)
        return True

    @staticmethod
    def _as_planned(conn: sqlite3.Connection, row: Row, planned: list[_Index], indexes: list[_Index]) -> bool:
        """Under the write lock: whether the indexes (``indexes``, read under it) and the document's
        stored bytes are still what a plan read before it (``planned``, ``row``)."""
        return indexes == planned and conn.execute("SELECT data FROM docs WHERE rid = ?", (row[0],)).fetchone() == (row[1],)

    @staticmethod
    def _result(matched: int, modified: int, upserted: Any, *_: Any) -> UpdateResult:
        raw = {"n": matched + (upserted is not None), "nModified": modified, "ok": 1.0}
        return UpdateResult(raw | ({"upserted": upserted} if upserted is not None else {}), True)

    def update_one(self, filter: Mapping, update: Mapping, upsert: bool = False, *, sort: Any = None,
                   **options: Any) -> UpdateResult:
        self._options("update_one", options)
        _check_update(update)
        return self._result(*self._modify(filter, update, upsert=upsert, sort=sort))

    def update_many(self, filter: Mapping, update: Mapping, upsert: bool = False, **options: Any) -> UpdateResult:
        self._options("update_many", options)
        _check_update(update)
        return self._result(*self._modify(filter, update, multi=True, upsert=upsert))

    def replace_one(self, filter: Mapping, replacement: Mapping, upsert: bool = False, *, sort: Any = None,
                    **options: Any) -> UpdateResult:
        self._options("replace_one", options)
        _check_replacement(replacement)
        return self._result(*self._modify(filter, replacement, replace=True, upsert=upsert, sort=sort))

    def find_one_and_update(self, filter: Mapping, update: Mapping, projection: Any = None, sort: Any = None,
                            upsert: bool = False, return_document: bool = ReturnDocument.BEFORE,
                            **options: Any) -> dict | None:
        self._options("find_one_and_update", options)
        _check_update(update)
        *_, before, after = self._modify(filter, update, upsert=upsert, sort=sort)
        return _project(after if return_document == ReturnDocument.AFTER else before, projection)

    def find_one_and_replace(self, filter: Mapping, replacement: Mapping, projection: Any = None, sort: Any = None,
                             upsert: bool = False, return_document: bool = ReturnDocument.BEFORE,
                             **options: Any) -> dict | None:
        self._options("find_one_and_replace", options)
        _check_replacement(replacement)
        *_, before, after = self._modify(filter, replacement, replace=True, upsert=upsert, sort=sort)
        return _project(after if return_document == ReturnDocument.AFTER else before, projection)

    def bulk_write(self, requests: Iterable[Any], ordered: bool = True, **options: Any) -> BulkWriteResult:
        """pymongo's ``InsertOne``, ``UpdateOne``, ``UpdateMany``, ``ReplaceOne``, ``DeleteOne`` and
        ``DeleteMany``, run in order, each atomic on its own. Ordered: stops at the first write
        error; unordered: runs them all. Either way a write error raises ``BulkWriteError`` with
        what was done. They are written ``BULK_OPS`` to a transaction: one lock and one commit for
        many small writes (a goal's outcomes). The ops before a failed one are kept, as on MongoDB."""
        self._options("bulk_write", options)
        ops = []
        for request in requests:
            if not hasattr(request, "_add_to_bulk"):
                raise TypeError(f"{request!r} is not a valid request")
            recorder = _BulkRecorder()
            request._add_to_bulk(recorder)
            ops.extend(recorder.ops)
        if not ops:
            raise InvalidOperation("No operations to execute")
        for kind, args, kwargs in ops:  # refuse an unsupported option before anything is written
            self._options(kind + (args[0] if kind != "insert" else "_one"), kwargs)
        raw: dict[str, Any] = {"writeErrors": [], "writeConcernErrors": [], "nInserted": 0, "nUpserted": 0,
                               "nMatched": 0, "nModified": 0, "nRemoved": 0, "upserted": []}
        for start in range(0, len(ops), BULK_OPS):
            batch = range(start, min(start + BULK_OPS, len(ops)))
            # The updates of one document are computed before the lock, as ``update_one``'s are;
            # under it each is written if its document is unchanged, else done there in full.
            plans = {index: plan for index in batch if (plan := self._bulk_plan(ops[index])) is not None}
            with self._client._write() as conn:
                # Read once under the lock: no op of a bulk changes them, and no other writer can.
                indexes = self._indexes(conn, next(iter(plans.values())).cid) if plans else []
                for index in batch:
                    if not self._bulk_op(ops[index], index, raw, plans.get(index), indexes) and ordered:
                        break
            if raw["writeErrors"] and ordered:
                break
        if raw["writeErrors"]:
            raise BulkWriteError(raw)
        return BulkWriteResult(raw, True)

    def _write_nested(self, plan: _Planned, indexes: list[_Index]) -> bool:
        with self._client._write() as conn:  # a savepoint of the bulk's transaction
            return self._write_planned(conn, plan, indexes)

    def _bulk_plan(self, op: tuple[str, tuple, dict]) -> _Planned | None:
        """The write an ``UpdateOne`` or ``ReplaceOne`` (no ``sort``) of a bulk would make, as of
        now; None for any other op, or when it would write nothing as of now (done under the lock)."""
        kind, args, kwargs = op
        if kind not in ("update", "replace") or args[0] != "_one" or kwargs:
            return None
        try:
            plan = self._plan_one(_filter(args[1]), _norm(args[2]), kind == "replace", args[3])
        except WriteError:
            return None  # raised again under the lock, where it is counted
        return plan if isinstance(plan, _Planned) else None

    def _bulk_op(self, op: tuple[str, tuple, dict], index: int, raw: dict[str, Any], plan: _Planned | None,
                 indexes: list[_Index]) -> bool:
        """One op of ``bulk_write`` (its write as ``plan``ned, if its document is unchanged), counted
        in ``raw``; False: it raised a write error."""
        kind, args, kwargs = op
        try:
            if plan is not None and self._write_nested(plan, indexes):
                raw["nMatched"] += 1
                raw["nModified"] += 1
            elif kind == "insert":
                self.insert_one(*args)
                raw["nInserted"] += 1
            elif kind == "delete":
                raw["nRemoved"] += getattr(self, kind + args[0])(*args[1:], **kwargs).deleted_count
            else:
                result = getattr(self, kind + args[0])(*args[1:], **kwargs)
                raw["nMatched"] += result.matched_count
                raw["nModified"] += result.modified_count
                if result.upserted_id is not None:
                    raw["nUpserted"] += 1
                    raw["upserted"].append({"index": index, "_id": result.upserted_id})
        except WriteError as exc:
            raw["writeErrors"].append({"index": index, "code": exc.code, "errmsg": str(exc),
                                       "op": args[-1] if kind == "insert" else args[1]})
            return False
        return True

    def _delete(self, filter: Any, multi: bool, sort: Any = None) -> list[dict]:
        flt = _filter(filter)
        if not multi and not sort and (done := self._delete_one_planned(flt)) is not None:
            return done
        with self._client._write() as conn:
            rows = self._select(conn, flt, sort, 0, None if multi else 1)
            if rows:
                cid = self._cid(conn)
                self._delete_rows(conn, self._entries_of(cid, self._indexes(conn, cid), rows), rows)
        return [r[2] for r in rows]

    def _delete_one_planned(self, flt: dict) -> list[dict] | None:
        """One document deleted with what to delete read before the write lock, from the last
        committed state, as ``_modify_one`` updates one: under the lock, one SQL read checks that
        its bytes and the collection's indexes are unchanged. None: they changed meanwhile
        (``_delete`` does it all under the lock). Nothing matched: the read's answer, none."""
        conn = self._client._conn()
        if (cid := self._cid(conn)) is None:
            return []
        indexes = self._last_indexes(conn, cid)
        rows = self._select(conn, flt, None, 0, 1)
        if not rows:
            return []
        entries = self._entries_of(cid, indexes, rows)
        with self._client._write() as conn:
            if not self._as_planned(conn, rows[0], indexes, self._indexes(conn, cid)):
                return None
            self._delete_rows(conn, entries, rows)
        return [rows[0][2]]

    @staticmethod
    def _entries_of(cid: int, indexes: list[_Index], rows: list[Row]) -> list[tuple[int, str, bytes, int]]:
        """Every index entry of the documents in ``rows``, by its keys (see ``_SCHEMA``)."""
        return [(cid, ix.name, key, rid) for rid, _, doc in rows for ix in indexes for key in ix.entries(doc)]

    @staticmethod
    def _delete_rows(conn: sqlite3.Connection, entries: list[tuple[int, str, bytes, int]], rows: list[Row]) -> None:
        conn.executemany(_DROP_ENTRY, entries)
        conn.executemany("DELETE FROM docs WHERE rid = ?", [(r[0],) for r in rows])

    def delete_one(self, filter: Mapping, **options: Any) -> DeleteResult:
        self._options("delete_one", options)
        return DeleteResult({"n": len(self._delete(filter, False)), "ok": 1.0}, True)

    def delete_many(self, filter: Mapping, **options: Any) -> DeleteResult:
        self._options("delete_many", options)
        return DeleteResult({"n": len(self._delete(filter, True)), "ok": 1.0}, True)

    def find_one_and_delete(self, filter: Mapping, projection: Any = None, sort: Any = None,
                            **options: Any) -> dict | None:
        self._options("find_one_and_delete", options)
        docs = self._delete(filter, False, sort)
        return _project(docs[0], projection) if docs else None

    # -- indexes
    def create_index(self, keys: str | Iterable | Mapping, unique: bool = False, name: str | None = None,
                     **kwargs: Any) -> str:
        key = _index_key(keys)
        name = name or "_".join(f"{f}_{d}" for f, d in key)
        if key == [("_id", 1)] or name == "_id_":
            return "_id_"
        for option in ("background", "session", "comment"):  # no effect here (session: None only)
            if option == "session" and not _unused(kwargs.get(option)):
                raise unsupported("session= in create_index")
            kwargs.pop(option, None)
        if unknown := sorted(set(kwargs) - {"sparse", "partialFilterExpression"}):
            # A TTL, collation or text index would be silently ordinary here: refuse it instead.
            raise unsupported(f"{unknown[0]}= in create_index")
        spec = {"key": [list(k) for k in key], "unique": bool(unique), "sparse": bool(kwargs.pop("sparse", False))}
        if (partial := kwargs.pop("partialFilterExpression", None)) is not None:
            spec["partial"] = _norm(partial)
        spec_bson = bson.encode(spec | {"options": kwargs})
        with self._client._write() as conn:
            cid = self._cid(conn, create=True)
            row = conn.execute("SELECT spec FROM indexes WHERE cid = ? AND name = ?", (cid, name)).fetchone()
            if row is not None:
                if bson.decode(row[0]) == bson.decode(spec_bson):
                    return name  # idempotent, like Mongo
                raise OperationFailure(f"Index with name: {name} already exists with different options", 85)
            conn.execute("INSERT INTO indexes (cid, name, spec) VALUES (?, ?, ?)", (cid, name, spec_bson))
            ix = next(i for i in self._indexes(conn, cid) if i.name == name)
            rows = conn.execute("SELECT rid, data FROM docs WHERE cid = ?", (cid,)).fetchall()
            docs = {rid: bson.decode(data) for rid, data in rows}
            conn.executemany(_ADD_ENTRY,
                             [(cid, name, k, rid) for rid, doc in docs.items() for k in ix.entries(doc)])
            dup = unique and conn.execute("SELECT MIN(rid) FROM idx WHERE cid = ? AND iname = ? GROUP BY key "
                                          "HAVING COUNT(*) > 1 LIMIT 1", (cid, name)).fetchone()
            if dup:
                raise self._dup(name, ix.key_value(docs[dup[0]]))
        return name

    def index_information(self) -> dict:
        conn = self._client._conn()
        cid = self._cid(conn)
        if not conn.execute("SELECT 1 FROM colls WHERE cid = ? AND live = 1", (cid,)).fetchone():
            return {}
        return {"_id_": {"v": 2, "key": [("_id", 1)]}, **{ix.name: ix.info() for ix in self._indexes(conn, cid)}}

    def drop(self) -> None:
        self.database.drop_collection(self.name)

    def explain(self, filter: Mapping | None = None) -> list[str]:
        """SQLite's query plan for this filter (to check that a lookup uses an index)."""
        conn = self._client._conn()
        sql, params = self._plan(conn, self._cid(conn) or 0, _filter(filter))
        return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


class Cursor:
    """The lazily run result of ``find``; sort/limit/skip chain like pymongo's."""

    def __init__(self, collection: Collection, filter: Any, projection: Any, sort: Any, limit: int,
                 skip: int) -> None:
        self.collection = collection
        self._args = [filter, projection, _index_key(sort) if sort else None, skip, limit]
        self._docs: Iterator[dict] | None = None

    def sort(self, key_or_list: Any, direction: Any = 1) -> Cursor:
        self._args[2] = _index_key(key_or_list, direction)
        return self

    def skip(self, skip: int) -> Cursor:
        self._args[3] = skip
        return self

    def limit(self, limit: int) -> Cursor:
        self._args[4] = limit
        return self

    def hint(self, index: Any) -> Cursor:
        self.collection._check_hint("find", index)
        return self

    def collation(self, collation: Any) -> Cursor:
        if not _unused(collation):
            raise unsupported("collation in find")
        return self

    def batch_size(self, batch_size: int) -> Cursor:
        return self  # every document is read at once: batches change nothing

    def max_time_ms(self, max_time_ms: int | None) -> Cursor:
        return self  # no query is long enough here to stop

    def comment(self, comment: Any) -> Cursor:
        return self

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(_PymongoCursor, name):
            return _refuse_method("Cursor", name)
        raise AttributeError(f"'Cursor' object has no attribute {name!r}")

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> dict:
        if self._docs is None:
            flt, projection, sort, skip, limit = self._args
            self._docs = iter(self.collection._find(flt, projection, sort, skip, limit or None))
        return next(self._docs)

    def to_list(self, length: int | None = None) -> list[dict]:
        return list(itertools.islice(self, length))

    def close(self) -> None:
        self._docs = iter(())
