"""Backup and restore of the embedded store, and the reconciliation of Redis that follows a
restore (issue 24).

``backup(path)`` copies the embedded store online with SQLite's backup API: one consistent
snapshot of the database as committed at that moment, the WAL's pages included (a plain copy
of the file missed what was still in the WAL), while the API and workers go on writing. The
copy is written beside ``path``, checked (``PRAGMA integrity_check``), then renamed into place.

``restore(path)`` copies a backup back into the store through the same API (so processes that
have the store open see the restored data, never a half-written file), after checking its
integrity and its schema version (``goalhub.schema``), then ``reconcile()``s.

``reconcile()`` makes Redis and the restored store agree, so that nothing stays ``creating``
or ``running`` for ever:

- a ``create_goal`` job in Redis whose goal is not in the store (created after the backup)
  runs again: its payload is the goal, which is stored again under its id;
- a goal in the store whose ``goal.created`` was never recorded (the backup fell between the
  goal's write and its event's) gets ``create_goal`` again: it finds the goal and sends the
  event, whose receivers run;
- an outcome left ``running``, ``queued`` or ``retrying`` with no job pending for it is
  delivered again to its receiver alone, as its own job (receivers that ended ``ok`` never run
  again; their outbound calls after the backup may be made again, since the outbound records
  were restored too).

MongoDB is backed up with its own tools (``mongodump --oplog``, or a snapshot of a replica's
volume); ``reconcile()`` (``goalhub restore --reconcile-only``) is run after its restore too.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from goalhub import config, dispatch, liveness, outbox, schema, store, tracing, validation
from goalhub.errors import BadRequest, Conflict
from goalhub.queues import PENDING
from goalhub.store import get_database
from goalhub.tasks import create_jobs, created_arguments, enqueue_create_goal

log = logging.getLogger(__name__)

UNSETTLED = ("running", "queued", "retrying")

# A scheduler polls every GOALHUB_SCHEDULER_INTERVAL (0.05 s) and beats at most once a second:
# none for this long means none runs (one on this host that stopped is not counted at all).
SCHEDULER_STOPPED_AFTER = 5.0


def store_path() -> Path:
    """The embedded store's SQLite file (BadRequest on MongoDB: its own tools back it up)."""
    if config.settings().MONGO_URI:
        raise BadRequest("GOALHUB_MONGO_URI is set: back MongoDB up with mongodump --oplog or a volume snapshot "
                         "(README, Backup and restore); `goalhub restore --reconcile-only` after restoring it",
                         code="not_embedded")
    database = get_database()
    return Path(database.client.path)


def _copy(source: sqlite3.Connection, target_path: Path) -> None:
    target = sqlite3.connect(target_path)
    try:
        source.backup(target)  # every page at once: one read transaction, one consistent snapshot
        _check(target, target_path)
    finally:
        target.close()


def _check(conn: sqlite3.Connection, where: Path) -> None:
    result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise Conflict(f"{where} failed SQLite's integrity check: {result}", code="backup_corrupt")


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Documents per collection in an embedded store's file."""
    found: dict[str, int] = {}
    for cid, name in conn.execute("SELECT cid, name FROM colls WHERE db = ? AND live = 1 ORDER BY name",
                                  (config.settings().MONGO_DB,)):
        found[name] = conn.execute("SELECT count(*) FROM docs WHERE cid = ?", (cid,)).fetchone()[0]
    return found


def _version(conn: sqlite3.Connection) -> int | None:
    """The schema version recorded in an embedded store's file (``goalhub.schema``), read
    without opening it as a store (which would change the file)."""
    import bson  # pymongo's; the embedded store keeps its documents as BSON

    row = conn.execute("SELECT cid FROM colls WHERE db = ? AND name = ? AND live = 1",
                       (config.settings().MONGO_DB, schema.COLLECTION)).fetchone()
    for (data,) in conn.execute("SELECT data FROM docs WHERE cid = ?", (row[0],)) if row else ():
        document = bson.decode(data)
        if document.get("_id") == "schema":
            return int(document["version"])
    return None


def backup(path: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, Any]:
    """Copy the embedded store to ``path`` online; returns what was copied."""
    target = Path(path).resolve()
    if target.exists() and not overwrite:
        raise Conflict(f"{target} exists (--force replaces it)", code="backup_exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    source = sqlite3.connect(store_path(), timeout=60)
    try:
        source.execute("PRAGMA busy_timeout = 60000")
        _copy(source, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    copy = sqlite3.connect(target)
    try:
        found = counts(copy)
    finally:
        copy.close()
    return {"path": str(target), "bytes": target.stat().st_size, "seconds": round(time.monotonic() - started, 3),
            "collections": found}


def restore(path: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
    """Bring a backup back into the embedded store, then reconcile Redis with it. Refused while
    workers or a scheduler run (``force``: anyway), and for a backup from a newer schema."""
    source_path = Path(path).resolve()
    if not source_path.is_file():
        raise BadRequest(f"no backup at {source_path}", code="backup_missing")
    if not force:
        _refuse_while_work_runs("they would write into the store while it is replaced")
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    try:
        _check(source, source_path)
        version = _version(source)
        if version is not None and version > schema.SCHEMA_VERSION:
            raise schema.StoreTooNew(f"the backup's schema is version {version}, newer than this goalhub's "
                                     f"({schema.SCHEMA_VERSION})")
        target = sqlite3.connect(store_path(), timeout=60)
        try:
            target.execute("PRAGMA busy_timeout = 60000")
            source.backup(target)  # under SQLite's locks: readers see the old store or the restored one
        finally:
            target.close()
        restored = counts(source)
    finally:
        source.close()
    schema.check(get_database())  # a backup of an older schema is migrated before anything reads it
    return {"path": str(source_path), "collections": restored, "reconciled": reconcile()}


def _refuse_while_work_runs(why: str) -> None:
    """409 ``work_running`` while workers or a scheduler run (``goalhub restore``, ``store-upgrade``)."""
    running = liveness.work()
    age = running["scheduler_last_poll_age"]
    polling = age is not None and age < SCHEDULER_STOPPED_AFTER
    if any(running["workers"].values()) or polling:
        raise Conflict(f"stop the workers and the scheduler first (or --force): {why} (live workers by queue: "
                       f"{running['workers']}; last scheduler poll {age} s ago)", code="work_running")


def upgrade_store(*, force: bool = False) -> dict[str, Any]:
    """Bring the embedded store's file up to date: drop the index on the index entries' row ids
    that releases before 2026-12-04 made (``goalhub.sqlite_store``), which costs every index
    entry a second insert. Refused while workers or a scheduler run (``force``: anyway): a process
    of such a release still running would scan every index entry for each document it deletes,
    holding the write lock. Returns what it dropped."""
    if not force:
        _refuse_while_work_runs("a process of an earlier release would scan every index entry for each delete")
    dropped = store.drop_rid_index(get_database())
    if dropped is None:
        raise BadRequest("the store is MongoDB: nothing to upgrade here", code="not_embedded")
    return {"dropped": ["idx_rid"] if dropped else []}


def reconcile() -> dict[str, list[str]]:
    """Make Redis agree with the store after a restore (see the module's docstring). Returns the
    goal ids re-created, the goals whose event was sent again, the outcomes delivered again and
    those that could not be (no arguments to deliver them with)."""
    db = get_database()
    recreated: list[str] = []
    for job in create_jobs():
        if not job.args:
            continue
        goal: Any
        if isinstance(job.args[0], dict):  # a job of before the outbox: the document is its argument
            goal, goal_type = job.args[0], None
        else:  # create_goal(goal_id): the accepted document rides in its meta (goalhub.outbox.enqueue)
            goal, goal_type = job.meta.get("goal"), job.meta.get("goal_type")
        if not isinstance(goal, dict) or "_id" not in goal:
            continue
        goal_id = str(goal["_id"])
        if db.goals.count_documents({"_id": validation.oid(goal_id)}, limit=1) or outbox.find(db, goal_id):
            continue  # in the restored store: created, or accepted and relayed from there
        # Accepted after the backup: accepted again, in the goal's trace (the job carries the
        # request's context), so the record, and what is re-created from it, joins that trace.
        with tracing.span("restore accept again", {"goalhub.goal_id": goal_id}, kind="producer",
                          parent=job.meta.get(tracing.FIELD)):
            outbox.accept(db, goal, goal_type=goal_type)
            if job.get_status(refresh=False) not in PENDING:
                outbox.enqueue(goal_id, goal=goal, goal_type=goal_type)
        recreated.append(goal_id)
    announced = {record["goal_id"] for record in db.events.find({"event": "goal.created"}, {"goal_id": 1})}
    resent: list[str] = []
    for goal in db.goals.find({}, {"_id": 1}):
        goal_id = str(goal["_id"])
        if goal_id not in announced and goal_id not in recreated:
            document = {**db.goals.find_one({"_id": goal["_id"]}), "_id": goal_id}
            if outbox.find(db, goal_id):
                # Stored, and still accepted: its create job was under way when the backup was
                # taken. Accepted once already: only published again.
                outbox.enqueue(goal_id, goal=document)
            else:
                enqueue_create_goal(document)
            resent.append(goal_id)
    redelivered: list[str] = []
    stuck: list[str] = []
    for outcome in db.outcomes.find({"status": {"$in": list(UNSETTLED)}}):
        if outcome["goal_id"] in recreated or outcome["goal_id"] in resent:
            continue  # create_goal sends goal.created again: its receivers are delivered to then
        arguments = outcome.get("arguments")
        if arguments is None and outcome["event"] == "goal.created":
            goal = db.goals.find_one({"_id": validation.oid(outcome["goal_id"])})
            arguments = created_arguments(goal) if goal else None
        if arguments is None:
            stuck.append(outcome["_id"])
            continue
        plugin_receiver = f"{outcome['plugin']}.{outcome['receiver']}"
        dispatch.deliver(outcome["event"], arguments, only=[plugin_receiver])  # its own job, if none is pending
        redelivered.append(outcome["_id"])
    for kind, ids in (("re-created", recreated), ("sent goal.created again for", resent),
                      ("delivered again", redelivered)):
        if ids:
            log.warning("restore: %s %d: %s", kind, len(ids), ", ".join(sorted(ids)[:20]))
    if stuck:
        log.error("restore: %d unsettled outcome(s) without the arguments to deliver them again: %s "
                  "(goalhub retry, or goalhub fire)", len(stuck), ", ".join(stuck[:20]))
    return {"recreated": sorted(recreated), "resent": sorted(resent), "redelivered": sorted(redelivered),
            "stuck": sorted(stuck)}

