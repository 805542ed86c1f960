"""Test fires: a realistic goal to send a signal for, the event's arguments, and the purge.

``goalhub fire`` and the ``fire`` test fixture build the goal from its goal type's ``sample``
(``GoalType.sample``), so that real receivers find the documents they need: a live test
session carrying every plugin's session fields, and whatever the sample adds (the funding
goal a goal binds to...). A class without a sample gets a plain goal with the given
context. Every document a test fire writes carries ``test_fire: True`` (``TEST_FIRE``), its
outcomes too, and ``purge()`` (``goalhub outcomes --purge-test``) removes them all.
"""

from __future__ import annotations

import time
from typing import Any

from bson import ObjectId
from rq.exceptions import NoSuchJobError
from rq.job import Job

from goalhub import plugins
from goalhub.connection import get_redis
from goalhub.errors import BadRequest
from goalhub.goaltypes import TEST_FIRE, GoalDraft, SampleRequest
from goalhub.queues import job_id
from goalhub.tasks import created_arguments


def session(db: Any, session_id: str, user_id: str) -> dict[str, Any]:
    """The session ``session_id``: the stored one, or a new live test session of ``user_id``."""
    found = db.sessions.find_one({"_id": ObjectId(session_id)})
    if found is not None:
        return found
    document = {
        "_id": ObjectId(session_id),
        "user": user_id,
        "active": True,
        "sources": [],
        **plugins.session_fields(),
        "started_at": time.time(),
        TEST_FIRE: True,
    }
    db.sessions.insert_one(document)
    return document


def goal(db: Any, goal_class: str, *, goal_id: str | None = None, session_id: str | None = None,
         user_id: str | None = None, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The goal to fire for: the stored goal ``goal_id`` if there is one (it must be of
    ``goal_class``), else a new test goal of the class's sample, stored. ``context`` is merged
    into the goal's context."""
    goal_id = goal_id or str(ObjectId())
    stored = db.goals.find_one({"_id": ObjectId(goal_id)})
    if stored is not None:
        if stored["_cls"] != goal_class:
            raise BadRequest(f"goal {goal_id} is a {stored['_cls']}, not a {goal_class}")
        stored["context"] = {**stored.get("context", {}), **(context or {})}
        return stored
    live = session(db, session_id or str(ObjectId()), user_id or str(ObjectId()))
    session_id = str(live["_id"])
    goal_type = plugins.goal_classes().get(goal_class)
    if goal_type is not None and goal_type.sample is not None:
        draft = goal_type.sample(SampleRequest(goal_id=goal_id, session_id=session_id, user_id=live["user"],
                                               db=db, now=time.time()))
    else:
        draft = GoalDraft(cls=goal_class, active=True, conditions={"session_id": session_id}, levels=[{"target": 300}],
                          nbf=None, exp=None, context={"session_id": session_id},
                          metadata={"user_id": live["user"]})
    document = draft.document(goal_id)
    document["context"] = {**document["context"], **(context or {})}
    db.goals.insert_one({**document, "_id": ObjectId(goal_id), TEST_FIRE: True})
    return {**document, "_id": ObjectId(goal_id), TEST_FIRE: True}


def arguments(event: str, goal: dict[str, Any], *, streamer_id: str | None = None) -> dict[str, Any]:
    """The seeds' arguments of ``event`` for ``goal``."""
    base = created_arguments(goal)
    if event == "goal.created":
        return base
    common = {k: base[k] for k in ("goal_id", "_cls", "conditions", "context", "test_fire")}
    if event == "goal.added":
        return {
            **common,
            "session_id": base["conditions"].get("session_id"),
            "streamer_id": streamer_id or (goal.get("metadata") or {}).get("user_id"),
        }
    return {**common, "reason": "ended"}


def mark(db: Any, outcome_ids: list[str]) -> None:
    """Mark outcomes as a test fire's."""
    if outcome_ids:
        db.outcomes.update_many({"_id": {"$in": list(outcome_ids)}}, {"$set": {TEST_FIRE: True}})


def purge(db: Any) -> dict[str, int]:
    """Remove everything test fires wrote: their goals, sessions, outcomes (with the receivers'
    failed RQ jobs), event records and recorded outbound calls. Returns the counts."""
    goal_ids = [str(g["_id"]) for g in db.goals.find({TEST_FIRE: True}, {"_id": 1})]
    session_ids = [str(s["_id"]) for s in db.sessions.find({TEST_FIRE: True}, {"_id": 1})]
    plugins_purged = _purge_plugins(goal_ids, session_ids)
    outcome_query = {"$or": [{TEST_FIRE: True}, {"goal_id": {"$in": goal_ids}}]}
    outcome_ids = [o["_id"] for o in db.outcomes.find(outcome_query, {"_id": 1})]
    for outcome_id in outcome_ids:
        try:
            Job.fetch(job_id("receiver", outcome_id), connection=get_redis()).delete()
        except NoSuchJobError:
            pass
    counts = {
        "outcomes": db.outcomes.delete_many({"_id": {"$in": outcome_ids}}).deleted_count,
        "events": db.events.delete_many({"goal_id": {"$in": goal_ids}}).deleted_count,
        "outbound": db.outbound.delete_many({"goal_id": {"$in": goal_ids}}).deleted_count,
        "goals": db.goals.delete_many({TEST_FIRE: True}).deleted_count,
        "sessions": db.sessions.delete_many({TEST_FIRE: True}).deleted_count,
    }
    return {**counts, **plugins_purged}


def _purge_plugins(goal_ids: list[str], session_ids: list[str]) -> dict[str, Any]:
    """Each plugin's ``purge_test_fires`` hook, first (while the goals are still there to look
    at): ``plugin:<name>`` -> what it returned, or the error it raised (the others go on)."""
    found: dict[str, Any] = {}
    if not goal_ids and not session_ids:
        return found
    for impl in plugins.get_plugin_manager().hook.purge_test_fires.get_hookimpls():
        given = {"goal_ids": list(goal_ids), "session_ids": list(session_ids)}
        try:  # only the arguments it asks for: a hook may take fewer than the spec has
            found[f"plugin:{impl.plugin_name}"] = impl.function(**{a: given[a] for a in impl.argnames if a in given})
        except Exception as exc:  # noqa: BLE001  (one plugin's failure is reported; the purge goes on)
            found[f"plugin:{impl.plugin_name}"] = f"failed: {type(exc).__name__}: {exc}"
    return found
