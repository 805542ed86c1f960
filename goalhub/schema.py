"""The store's schema version and the jobs' payload version (issue 24).

The store holds one document ``{"_id": "schema", "version": N}`` in the ``goalhub_meta``
collection (MongoDB and the embedded store alike). An empty store without it gets this code's
version when first opened; one that holds goals or outcomes but no version was written by a
goalhub from before schema versions: version 0. A store whose version is newer than this
code's was written by a newer goalhub: every process refuses to open it (``StoreTooNew``),
rather than read or write documents whose shape it does not know. An older one is migrated
forward by ``MIGRATIONS``, in order, each step recorded:

- 0 -> 1: the ledger (``goalhub.ledger``) did not exist: each ``ok`` outcome's (event,
  receiver) is written into its goal's ledger, so that a receiver that finished an event on
  the old version is never run for it again once retention purged its outcome record.
- 1 -> 2: ``lifecycle.pending`` (``goalhub.tasks``) did not exist: each goal not ended whose
  activation (not active yet), end, or end request was scheduled gets those kinds in it, so
  that the reconciler, which now looks only at the goals it names, still finds their jobs if
  Redis loses them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from goalhub import ledger
from goalhub.errors import GoalhubError

#: The version of the documents this code reads and writes.
SCHEMA_VERSION = 2

#: The version of goalhub's RQ job payloads (the functions and arguments of create_goal,
#: activate_goal, end_goal, run_receiver...), carried in each job's ``meta["payload_version"]``.
#: A worker runs a job of its own version or an older one (a job without it is version 1) and
#: fails a newer one with a clear reason (``goalhub.worker``): a worker not yet upgraded never
#: runs a job whose arguments it would misread. Raise it when a job's arguments change shape,
#: and keep the job functions of the previous version working (README, Upgrading).
PAYLOAD_VERSION = 1

BATCH = 1000


def _ledger_from_outcomes(database: Any) -> None:
    """0 -> 1: every ``ok`` outcome into its goal's ledger (idempotent: two processes may both run it)."""
    outcomes = database.outcomes.find({"status": "ok"}, {"_id": 1, "goal_id": 1, "event": 1})
    while True:
        chunk = list(itertools.islice(outcomes, BATCH))
        if not chunk:
            return
        done: dict[str, set[str]] = {}
        for outcome in chunk:
            receiver_id = str(outcome["_id"]).rpartition("|")[2]  # ``<event>:<goal_id>|<plugin>.<receiver>``
            done.setdefault(str(outcome["goal_id"]), set()).add(ledger.entry(outcome["event"], receiver_id))
        for goal_id, entries in done.items():
            database[ledger.COLLECTION].update_one({"_id": goal_id}, {"$addToSet": {"done": {"$each": sorted(entries)}}},
                                                   upsert=True)


def _pending_lifecycle(database: Any) -> None:
    """1 -> 2: the kinds of lifecycle job still pending into each goal's ``lifecycle.pending``
    (idempotent: ``$addToSet``). The names are ``goalhub.tasks``'s, written out here because a
    migration describes the store as it was, whatever the code calls things later."""
    open_goals = {"ended_at": {"$exists": False}}
    for kind, query in (("activate", {"lifecycle.activate_at": {"$exists": True}, "active": False}),
                        ("end", {"lifecycle.end_at": {"$exists": True}}),
                        ("end-request", {"end_requested_at": {"$exists": True}})):
        database.goals.update_many({**query, **open_goals}, {"$addToSet": {"lifecycle.pending": kind}})


#: version N -> the function that brings a store at N to N + 1 (run in order, then recorded).
MIGRATIONS: dict[int, Callable[[Any], None]] = {0: _ledger_from_outcomes, 1: _pending_lifecycle}

COLLECTION = "goalhub_meta"


class StoreTooNew(GoalhubError):
    """The store was written by a newer goalhub."""

    status = 503
    code = "store_too_new"


def stored_version(database: Any) -> int | None:
    record = database[COLLECTION].find_one({"_id": "schema"})
    return int(record["version"]) if record else None


def check(database: Any) -> int:
    """Record this code's version in an empty store that has none (0 in one that holds goals or
    outcomes), migrate an older one, refuse a newer one. Returns the store's version."""
    found = stored_version(database)
    if found is None:
        written = any(database[name].find_one({}, {"_id": 1}) for name in ("goals", "outcomes"))
        database[COLLECTION].update_one({"_id": "schema"},
                                        {"$setOnInsert": {"version": 0 if written else SCHEMA_VERSION}}, upsert=True)
        found = stored_version(database) or 0
    if found > SCHEMA_VERSION:
        raise StoreTooNew(f"the store's schema is version {found}, newer than this goalhub's ({SCHEMA_VERSION}): "
                          "it was written by a newer goalhub; run that version (see README, Upgrading)")
    while found < SCHEMA_VERSION:
        MIGRATIONS[found](database)
        found += 1
        # Never back: a process that migrated further meanwhile keeps its version.
        database[COLLECTION].update_one({"_id": "schema", "version": {"$lt": found}}, {"$set": {"version": found}})
    return found
