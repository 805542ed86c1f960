"""The pending work of a receiver that is gone: re-target it to another receiver, or drop it.

A plugin's new version may rename a receiver (``tally`` becomes ``count``) or remove it, and a
plugin may be renamed. The outcome records of the old receiver's unfinished work (``queued``,
``retrying``, ``timed out``, ``failed``, ``paused``, or ``running`` past the job timeout, which
no job holds any more) still name it, and their jobs fail with "receiver ... is not installed"
(``goalhub.dispatch.run_receiver``), which says to come here. The operator decides
(``goalhub retarget`` / ``goalhub drop``, ``POST /admin/receivers/<old>/retarget`` / ``drop``):

- ``retarget(old, new)``: each such outcome is taken in one atomic update (``retargeted``, with
  ``retargeted_to``), then an outcome of ``new`` for the same event is written with the event's
  arguments (``retargeted_from``) and its job enqueued: ``new`` runs it once, like any receiver
  (``skipped`` when ``new`` does not act on the goal's class). ``old`` and ``new`` are both
  receiver ids (``plugin.receiver``) or both plugin names (a renamed plugin: each receiver of
  ``old`` goes to ``new``'s receiver of the same name). ``new`` must be installed here and
  receive each event; nothing is written otherwise.
- ``drop(old)``: each such outcome is taken to ``dropped``; nothing runs it.

Exactly once: ``retargeted`` and ``dropped`` are final (``goalhub.dispatch.DONE``), so no
delivery or job runs ``old`` for that event again (a late job of it finds the outcome taken).
The ledger (``goalhub.ledger``) is asked first: an outcome whose receiver finished its event
(its ``ok`` lost in a crash) is made ``ok`` instead of moved, and an event ``new`` finished
already gets ``new``'s outcome ``ok`` without a run. An event ``new`` has an outcome for already
(delivered to it since, or backfilled) keeps that one. A crash between taking an outcome and
writing ``new``'s leaves it ``retargeted`` with ``retarget_pending``: running the same
retarget again completes it. The old receiver's failed jobs leave RQ's failed registry, so the
failed-jobs alert stops counting work that was dealt with.

Each call takes at most ``BATCH`` outcomes (``more`` says whether others wait: call again).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pymongo.errors import DuplicateKeyError
from rq.job import Job, JobStatus

from goalhub import config, dispatch, ledger, metrics, retention
from goalhub.errors import BadRequest, NotFound
from goalhub.goaltypes import TEST_FIRE
from goalhub.queues import get_queue, job_id
from goalhub.receivers import Receiver, check_target, find_receiver, receivers
from goalhub.store import get_database

log = logging.getLogger(__name__)

#: Unfinished outcomes that may be re-targeted or dropped (``running`` only past the job timeout).
PENDING = ("queued", "retrying", "timed out", "failed", "paused")
#: An outcome's fields the new receiver's outcome keeps: the event and what it is run with.
KEPT = ("event", "event_id", "goal_id", "_cls", "request_id", "arguments", TEST_FIRE)
#: Outcomes taken by one call.
BATCH = 1000
RUN_RECEIVER = f"{dispatch.run_receiver.__module__}.{dispatch.run_receiver.__qualname__}"


def _who(target: str) -> dict[str, str]:
    plugin, _, name = target.partition(".")
    return {"plugin": plugin, **({"receiver": name} if name else {})}


def _pending(now: float) -> list[dict[str, Any]]:
    """The conditions (one of) of an outcome that may be taken: unfinished, and no job holds it."""
    cutoff = now - config.settings().JOB_TIMEOUT
    return [{"status": {"$in": list(PENDING)}},
            {"status": "running", "started_at": {"$lte": cutoff}},
            {"status": "running", "started_at": {"$exists": False}, "queued_at": {"$lte": cutoff}}]


def _new_id(new: str, outcome: dict[str, Any]) -> str:
    """The receiver an outcome goes to: ``new`` itself, or ``new``'s receiver of the same name."""
    return new if "." in new else f"{new}.{outcome['receiver']}"


def _check_pair(old: str, new: str) -> None:
    check_target(old, "old")
    check_target(new, "new")
    if old == new:
        raise BadRequest("old and new name the same receiver", code="same_target", field="new")
    if ("." in old) != ("." in new):
        raise BadRequest("old and new must both be receiver ids (plugin.receiver) or both plugin names",
                         code="invalid_target", field="new")


def _resolve(outcomes: list[dict[str, Any]], new: str) -> dict[tuple[str, str], Receiver]:
    """(event, new receiver id) -> the installed receiver, for every outcome; ``NotFound`` (before
    anything is written) naming the first that is not installed here."""
    found: dict[tuple[str, str], Receiver] = {}
    for outcome in outcomes:
        pair = (outcome["event"], _new_id(new, outcome))
        if pair in found:
            continue
        receiver = find_receiver(*pair)
        if receiver is None:
            installed = ", ".join(sorted(r.id for r in receivers(pair[0]))) or "none"
            raise NotFound(f"no installed receiver {pair[1]} of {pair[0]} to take the pending work of "
                           f"{outcome['plugin']}.{outcome['receiver']}; installed: {installed}",
                           code="receiver_not_found", field="new")
        found[pair] = receiver
    return found


def retarget(old: str, new: str, *, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
    """Move ``old``'s pending work to ``new`` (see the module). Returns what was done: the new
    outcome ids ``retargeted`` (with their ``jobs``), those ``new`` had already
    (``already_delivered``) or does not act on (``skipped``), the old ones made ``ok`` by the
    ledger (``finished_before``), and ``more``."""
    _check_pair(old, new)
    db = get_database()
    now = time.time() if now is None else now
    conditions = _pending(now)
    query = {**_who(old), "arguments": {"$exists": True}}
    # A crash between taking an outcome and writing new's left it retargeted and pending: completed first.
    outcomes = list(db.outcomes.find({**query, "status": "retargeted", "retarget_pending": True}).limit(BATCH))
    outcomes += list(db.outcomes.find({**query, "$or": conditions}).limit(BATCH - len(outcomes)))
    resolved = _resolve(outcomes, new)
    result: dict[str, Any] = {"old": old, "new": new, "dry_run": dry_run, "pending": len(outcomes),
                              "retargeted": [], "jobs": [], "already_delivered": [], "skipped": [],
                              "finished_before": []}
    if dry_run:
        result["outcomes"] = [o["_id"] for o in outcomes]
        result["more"] = len(outcomes) == BATCH
        return result
    for outcome in outcomes:
        receiver = resolved[(outcome["event"], _new_id(new, outcome))]
        _retarget_one(db, outcome, receiver, conditions, now, result)
    result["more"] = len(outcomes) == BATCH
    if outcomes:
        log.warning("retargeted %d pending outcome(s) of %s to %s (%d job(s))", len(result["retargeted"]), old,
                    new, len(result["jobs"]))
    return result


def _retarget_one(db: Any, outcome: dict[str, Any], receiver: Receiver, conditions: list[dict[str, Any]],
                  now: float, result: dict[str, Any]) -> None:
    key = outcome["_id"]
    event_key = dispatch.outcome_parts(key)[0]
    if outcome["status"] != "retargeted":
        if dispatch.finished_before(db, key):  # the old receiver did finish it: ok, nothing to move
            result["finished_before"].append(key)
            return
        taken = db.outcomes.update_one({"_id": key, "$or": conditions}, {"$set": {
            "status": "retargeted", "retargeted_to": receiver.id, "retargeted_at": now, "retarget_pending": True}})
        if not taken.modified_count:
            return  # a job took it meanwhile (the receiver is still installed somewhere): not moved
        metrics.receiver_outcome(outcome["plugin"], outcome["receiver"], "retargeted")
    new_key = dispatch.outcome_id(event_key, receiver)
    record = {"_id": new_key, **{k: outcome[k] for k in KEPT if k in outcome}, "receiver": receiver.name,
              "plugin": receiver.plugin, "dist": receiver.dist, "version": receiver.version,
              "retargeted_from": f"{outcome['plugin']}.{outcome['receiver']}", **retention.stamp()}
    if ledger.entry(outcome["event"], receiver.id) in ledger.finished(db, outcome["goal_id"]):
        record.update(status="ok", attempts=0, at=now, result=dispatch.FINISHED_BEFORE)
    elif receiver.acts_on(outcome.get("_cls") or ""):
        record.update(status="queued", attempts=0, queued_at=now)
    else:
        record.update(status="skipped", at=now)
    try:
        db.outcomes.insert_one(record)
    except DuplicateKeyError:
        result["already_delivered"].append(new_key)  # the new receiver had this event: its outcome stays
    else:
        result["skipped" if record["status"] == "skipped" else "retargeted"].append(new_key)
        if record["status"] == "queued":
            job = dispatch.enqueue_receiver(receiver, new_key, event_key)
            if job is not None:
                result["jobs"].append(job.id)
    # The event's record lists the receivers it went to (its outcomes are all written once it does).
    db.events.update_one({"_id": event_key}, {"$addToSet": {"receivers": receiver.id}})
    db.outcomes.update_one({"_id": key}, {"$unset": {"retarget_pending": ""}})
    _forget_failed_jobs(outcome)


def drop(old: str, *, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
    """Drop ``old``'s pending work (see the module): its outcomes ``dropped``, never run. Returns
    the outcome ids ``dropped``, those made ``ok`` by the ledger (``finished_before``), and ``more``."""
    check_target(old, "old")
    db = get_database()
    now = time.time() if now is None else now
    conditions = _pending(now)
    outcomes = list(db.outcomes.find({**_who(old), "$or": conditions}).limit(BATCH))
    result: dict[str, Any] = {"old": old, "dry_run": dry_run, "pending": len(outcomes), "dropped": [],
                              "finished_before": [], "more": len(outcomes) == BATCH}
    if dry_run:
        result["outcomes"] = [o["_id"] for o in outcomes]
        return result
    for outcome in outcomes:
        key = outcome["_id"]
        if dispatch.finished_before(db, key):
            result["finished_before"].append(key)
            continue
        taken = db.outcomes.update_one({"_id": key, "$or": conditions},
                                       {"$set": {"status": "dropped", "dropped_at": now}})
        if taken.modified_count:
            result["dropped"].append(key)
            metrics.receiver_outcome(outcome["plugin"], outcome["receiver"], "dropped")
            _forget_failed_jobs(outcome)
    if outcomes:
        log.warning("dropped %d pending outcome(s) of %s", len(result["dropped"]), old)
    return result


def _forget_failed_jobs(outcome: dict[str, Any]) -> None:
    """Delete the old receiver's failed jobs of ``outcome`` (its own job, a retry's or a resume's)."""
    candidates = {job_id("receiver", outcome["_id"])} | ({outcome["job_id"]} if outcome.get("job_id") else set())
    for job in Job.fetch_many(sorted(candidates), connection=get_queue().connection):
        # Only a receiver job of this outcome (an inline run's job_id names the job that sent the event).
        if (job is not None and job.get_status(refresh=False) == JobStatus.FAILED
                and job.func_name == RUN_RECEIVER and list(job.args[:1]) == [outcome["_id"]]):
            job.delete()
