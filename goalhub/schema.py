"""The store's schema version and the jobs' payload version (issue 24).

The store holds one document ``{"_id": "schema", "version": N}`` in the ``goalhub_meta``
collection (MongoDB and the embedded store alike). A store without it gets this code's
version when first opened. A store whose version is newer than this code's was written by a
newer goalhub: every process refuses to open it (``StoreTooNew``), rather than read or write
documents whose shape it does not know. An older one is migrated forward by ``MIGRATIONS``
(none yet: version 1 is the first recorded one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from goalhub.errors import GoalhubError

#: The version of the documents this code reads and writes.
SCHEMA_VERSION = 1

#: The version of goalhub's RQ job payloads (the functions and arguments of create_goal,
#: activate_goal, end_goal, run_receiver...), carried in each job's ``meta["payload_version"]``.
#: A worker runs a job of its own version or an older one (a job without it is version 1) and
#: fails a newer one with a clear reason (``goalhub.worker``): a worker not yet upgraded never
#: runs a job whose arguments it would misread. Raise it when a job's arguments change shape,
#: and keep the job functions of the previous version working (README, Upgrading).
PAYLOAD_VERSION = 1

#: version N -> the function that brings a store at N to N + 1 (run in order, then recorded).
MIGRATIONS: dict[int, Callable[[Any], None]] = {}

COLLECTION = "goalhub_meta"


class StoreTooNew(GoalhubError):
    """The store was written by a newer goalhub."""

    status = 503
    code = "store_too_new"


def stored_version(database: Any) -> int | None:
    record = database[COLLECTION].find_one({"_id": "schema"})
    return int(record["version"]) if record else None


def check(database: Any) -> int:
    """Record this code's version in a store that has none, migrate an older one, refuse a newer
    one. Returns the store's version."""
    found = stored_version(database)
    if found is None:
        database[COLLECTION].update_one({"_id": "schema"}, {"$setOnInsert": {"version": SCHEMA_VERSION}},
                                        upsert=True)
        found = stored_version(database) or SCHEMA_VERSION
    if found > SCHEMA_VERSION:
        raise StoreTooNew(f"the store's schema is version {found}, newer than this goalhub's ({SCHEMA_VERSION}): "
                          "it was written by a newer goalhub; run that version (see README, Upgrading)")
    while found < SCHEMA_VERSION:
        MIGRATIONS[found](database)
        found += 1
        database[COLLECTION].update_one({"_id": "schema"}, {"$set": {"version": found}})
    return found
