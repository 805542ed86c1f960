"""The plugin of the N -> N+1 upgrade test (``tests/test_upgrade_drain.py``), loaded through
``GOALHUB_PLUGINS`` by both goalhub versions, so it uses only names both public APIs have.

Its own version comes from ``UPGRADE_PLUGIN_VERSION`` (``1`` beside goalhub N, ``2`` beside
N+1), as a plugin upgraded with goalhub: version 2 renames the receiver ``tally_v1`` to
``tally_v2``. Each receiver counts its successful runs of each goal in the store
(``upgrade_runs``, ``<name>:<goal_id>``), so a second run shows, whatever process made it;
``steady`` and ``tally_v1`` fail their first attempt of each goal (a sink briefly down), so that
goalhub N leaves their retries in flight.
"""

from __future__ import annotations

import os

import goalhub

VERSION = os.environ.get("UPGRADE_PLUGIN_VERSION", "1")
CLASS = "UpgradeGoal"


def _first_attempt(name: str, goal_id: str) -> bool:
    attempts = goalhub.get_database().upgrade_attempts
    attempts.update_one({"_id": f"{name}:{goal_id}"}, {"$inc": {"n": 1}}, upsert=True)
    return attempts.find_one({"_id": f"{name}:{goal_id}"})["n"] == 1


def _ran(name: str, goal_id: str) -> dict[str, str]:
    goalhub.get_database().upgrade_runs.update_one({"_id": f"{name}:{goal_id}"}, {"$inc": {"n": 1}}, upsert=True)
    return {"ran": name, "version": VERSION}


@goalhub.receiver("goal.created", CLASS, retries=2, backoff=[1])
def steady(goal_id):
    if _first_attempt("steady", goal_id):
        raise ConnectionError("the steady sink is briefly down")
    return _ran("steady", goal_id)


@goalhub.receiver("goal.created", CLASS, isolated=True)
def apart(goal_id):
    return _ran("apart", goal_id)


@goalhub.receiver("goal.ended", CLASS)
def ended(goal_id, reason):
    return _ran("ended", goal_id)


if VERSION == "1":

    @goalhub.receiver("goal.created", CLASS, retries=1, backoff=[1])
    def tally_v1(goal_id):
        if _first_attempt("tally", goal_id):
            raise ConnectionError("the tally sink is briefly down")
        return _ran("tally", goal_id)

else:

    @goalhub.receiver("goal.created", CLASS, retries=1, backoff=[1])
    def tally_v2(goal_id):  # tally_v1, renamed
        return _ran("tally", goal_id)
