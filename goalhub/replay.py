"""Past events, delivered again to one plugin or receiver: backfill and resume.

**Backfill** rebuilds past events from what the store holds and delivers each to the
target only (``plugin`` or ``plugin.receiver``), on the backfill queue, which workers take
after every live queue:

- ``goal.created`` from the goals (the arguments ``create_goal`` sent);
- ``goal.ended`` from the goals that ended (with their ``end_reason``);
- ``goal.added`` from the ``events`` records of the ``goal.added`` events that were
  delivered live (a goal added to a session by a binding receiver), completed from the goal
  and its session. Only those: rebuilding it from every goal bound to a session would send
  ``goal.added`` for goals that were never added (an exclusive goal is bound to its
  session, but no ``goal.added`` is sent for it). It reaches back as far as ``events``
  records are kept.

Each event gets the outcome id it would have had live, and an event whose targeted
receivers all have an outcome already is skipped, so running a backfill twice, or again
after an interrupted one, delivers each (event, receiver) once.

``redeliver_skipped`` (``--redeliver-skipped``) repairs what a class typo skipped: an event
whose outcome for a targeted receiver is ``skipped`` (the receiver did not act on the
event's class then) and which the receiver acts on now is delivered to it again, once: its
outcome turns from ``skipped`` to ``queued`` in one atomic update, so two backfills cannot
both deliver it, and once ``ok`` it is done like any other.

**Resume** closes a tripped receiver's breaker (``goalhub.breaker``) and delivers its
``paused`` and ``failed`` outcomes again, exactly once each.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from rq.job import Job

from goalhub import breaker, config, dispatch, ledger, receivers, slowness
from goalhub.connection import get_redis
from goalhub.errors import BadRequest, NotFound
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.queues import PENDING, enqueue_once, get_queue, job_id
from goalhub.store import get_database
from goalhub.tasks import created_arguments

# Where each event's time comes from, for --since/--until.
EVENT_TIME = {"goal.created": "created_at", "goal.ended": "ended_at", "goal.added": "delivered_at"}


def target_receivers(target: str, event: str | None = None) -> list[receivers.Receiver]:
    """The installed receivers ``target`` names: ``plugin`` (all of its receivers) or
    ``plugin.receiver``; of ``event`` only, when given. None: a ``NotFound`` listing them."""
    events = [event] if event else list(EVENT_HOOKS)
    every = [r for e in events for r in receivers.receivers(e)]
    found = [r for r in every if receivers.targeted(r, {target})]
    if not found:
        known = ", ".join(sorted({r.plugin for r in every} | {r.id for r in every})) or "none"
        where = f" of {event}" if event else ""
        raise NotFound(f"no installed receiver{where} matches {target!r}; installed: {known}",
                       code="receiver_not_found", field="target")
    return found


def parse_when(value: str | float | None, what: str) -> float | None:
    """Epoch seconds from ``value``: epoch seconds, an ISO 8601 time (UTC unless it says), or
    an age such as ``30m``, ``12h``, ``7d`` (that long ago)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if age:
        return time.time() - float(age.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{what} must be epoch seconds, an ISO 8601 time or an age like 12h, "
                         f"not {text[:40]!r}", code="invalid_time", field=what) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def past_events(event: str, goal_class: str | None = None, since: float | None = None,
                until: float | None = None) -> Iterator[dict[str, Any]]:
    """The arguments of each past ``event``, oldest first, rebuilt from the store."""
    if event not in EVENT_HOOKS:
        raise BadRequest(f"unknown event {event!r}; one of {', '.join(EVENT_HOOKS)}", code="unknown_event",
                         field="event")
    db = get_database()
    moment: dict[str, Any] = {}
    if since is not None:
        moment["$gte"] = since
    if until is not None:
        moment["$lt"] = until
    if event == "goal.added":
        query: dict[str, Any] = {"event": "goal.added"}
        if moment:
            query["delivered_at"] = moment
        for record in db.events.find(query).sort("delivered_at", 1):
            goal = db.goals.find_one({"_id": ObjectId(record["goal_id"])})
            if goal is None or (goal_class and goal["_cls"] != goal_class):
                continue
            session_id = goal["conditions"].get("session_id")
            session = db.sessions.find_one({"_id": ObjectId(session_id)}) if session_id else None
            yield {"goal_id": str(goal["_id"]), "_cls": goal["_cls"], "conditions": goal["conditions"],
                   "context": goal["context"], "session_id": session_id,
                   "streamer_id": (session or {}).get("user") or goal.get("metadata", {}).get("user_id")}
        return
    query = {"_cls": goal_class} if goal_class else {}
    stamp = EVENT_TIME[event]
    if event == "goal.ended":
        query["ended_at"] = {"$exists": True, **moment}
    elif moment:
        query[stamp] = moment
    for goal in db.goals.find(query).sort(stamp, 1):
        if event == "goal.created":
            yield created_arguments(goal)
        else:
            yield {"goal_id": str(goal["_id"]), "_cls": goal["_cls"], "conditions": goal["conditions"],
                   "context": goal["context"], "reason": goal.get("end_reason", "ended")}


@dataclass
class Progress:
    """How far a backfill got. ``delivered``: events handed to the target; ``already_done``:
    events whose targeted receivers all had an outcome; ``not_acting``: events of a class no
    targeted receiver acts on; ``redelivered_skipped``: ``skipped`` outcomes delivered again
    (``redeliver_skipped``); ``outcomes``: the outcome ids this run created or redelivered;
    ``stopped``: asked to stop, it stopped between two events."""

    target: str
    event: str
    total: int = 0
    seen: int = 0
    delivered: int = 0
    already_done: int = 0
    not_acting: int = 0
    redelivered_skipped: int = 0
    dry_run: bool = False
    stopped: bool = False
    started_at: float = field(default_factory=time.time)
    outcomes: list[str] = field(default_factory=list)

    def rate(self) -> float:
        return self.seen / max(time.time() - self.started_at, 1e-6)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "outcomes"} | {"rate": round(self.rate(), 1)}


def backfill(target: str, event: str, *, goal_class: str | None = None, since: float | None = None,
             until: float | None = None, dry_run: bool = False, rate: float | None = None,
             redeliver_skipped: bool = False, on_progress: Callable[[Progress], None] | None = None,
             stop: threading.Event | None = None) -> Progress:
    """Deliver past ``event`` s to ``target`` only, at most ``rate`` events a second, in this
    process (``goalhub backfill``: a foreground command, so it waits out the pacing itself;
    the ADMIN API's backfill runs as chunks instead, ``run_backfill_chunk``). Events already
    done cost no pacing. ``redeliver_skipped``: see the module. ``stop`` (set by Ctrl-C) ends
    it between two events, never inside one: an event's outcome records written and its jobs
    not enqueued would count as done when the backfill is run again."""
    chosen = target_receivers(target, event)
    progress = Progress(target=target, event=event, dry_run=dry_run)
    events = list(past_events(event, goal_class, since, until))
    progress.total = len(events)
    stop = stop or threading.Event()
    for arguments in events:
        if stop.is_set():
            progress.stopped = True
            break
        wanted = _undone(chosen, event, arguments, progress, redeliver_skipped)
        if wanted:
            if rate:  # paced from the start, by the events delivered: a slow one does not make the next burst
                pause = progress.started_at + progress.delivered / rate - time.time()
                if pause > 0 and stop.wait(pause):
                    progress.seen -= 1  # not delivered: the next run counts it
                    progress.stopped = True
                    break
            _deliver(chosen, event, arguments, wanted, progress)
        if on_progress:
            on_progress(progress)
    return progress


def _undone(chosen: list[receivers.Receiver], event: str, arguments: dict[str, Any], progress: Progress,
            redeliver_skipped: bool = False) -> list[str]:
    """Count one past event in ``progress``; the outcome ids of the targeted receivers that
    act on it and have not done it (none: not acting, or already done). ``redeliver_skipped``:
    a targeted receiver recorded ``skipped`` that acts on the class now is delivered to, once."""
    progress.seen += 1
    acting = [r for r in chosen if r.acts_on(arguments["_cls"])]
    if not acting:
        progress.not_acting += 1
        return []
    db = get_database()
    key = dispatch.event_id(event, arguments)
    wanted = [dispatch.outcome_id(key, r) for r in acting]
    found = {o["_id"]: o["status"] for o in db.outcomes.find({"_id": {"$in": wanted}}, {"status": 1})}
    done = set(found)
    if len(done) < len(wanted):  # outcomes purged by retention: the ledger still knows
        finished = ledger.finished(db, arguments["goal_id"])
        done |= {dispatch.outcome_id(key, r) for r in acting if ledger.entry(event, r.id) in finished}
    skipped = [w for w in wanted if found.get(w) == "skipped"] if redeliver_skipped else []
    for outcome_key in skipped:  # acts on the class now, skipped then: once
        if progress.dry_run or _redeliver_skipped(outcome_key, arguments):
            progress.redelivered_skipped += 1
            progress.outcomes.append(outcome_key)
    if len(done) == len(wanted):
        progress.already_done += 0 if skipped else 1
        return []
    return [w for w in wanted if w not in done]


def _deliver(chosen: list[receivers.Receiver], event: str, arguments: dict[str, Any], wanted: list[str],
             progress: Progress) -> None:
    progress.delivered += 1
    progress.outcomes += wanted
    if not progress.dry_run:
        dispatch.deliver(event, arguments, only={r.id for r in chosen}, backfill=True)


def _redeliver_skipped(outcome_key: str, arguments: dict[str, Any]) -> bool:
    """Deliver a ``skipped`` outcome's event to its receiver again (its own job, backfill queue);
    False when it is no longer ``skipped`` (another backfill took it)."""
    dispatch.keep_arguments(get_database(), outcome_key, arguments)  # its job reads them there
    try:
        dispatch.retry_outcome(outcome_key, statuses=("skipped",), kind="redeliver", queue="backfill")
    except LookupError:
        return False
    return True


# --- resume --------------------------------------------------------------------------------


def redeliver(outcome_key: str) -> str | None:
    """Run a ``paused`` or ``failed`` outcome's receiver again, on the backfill queue; the job
    id, or None when the outcome is in neither state (already redelivered, or ok)."""
    try:
        return dispatch.retry_outcome(outcome_key, statuses=("paused", "failed"), kind="resume", queue="backfill")
    except LookupError:
        return None


def resume(target: str) -> dict[str, Any]:
    """Close the breaker of every receiver ``target`` names, end their isolation as slow
    receivers (``goalhub.slowness``) and deliver their ``paused`` and ``failed`` outcomes again.
    Returns the receivers that were tripped, those that were isolated and the outcome ids."""
    chosen = target_receivers(target)
    closed = [r.id for r in chosen if breaker.close(r.id)]
    unisolated = [r.id for r in chosen if slowness.reset(r.id)]
    redelivered = []
    for receiver in chosen:
        for outcome in get_database().outcomes.find(
            {"plugin": receiver.plugin, "receiver": receiver.name, "event": receiver.event,
             "status": {"$in": ["paused", "failed"]}}, {"_id": 1}
        ):
            if redeliver(outcome["_id"]):
                redelivered.append(outcome["_id"])
    return {"target": target, "closed": closed, "unisolated": unisolated, "receivers": [r.id for r in chosen],
            "redelivered": redelivered}


def receiver_states() -> list[dict[str, Any]]:
    """Every installed receiver with its breaker state (``tripped``: when, failures, last error)
    and whether it is isolated as slow (``slow``: since, until, the overrun)."""
    tripped = breaker.tripped()
    slow = slowness.isolated()
    return [{"id": r.id, "event": r.event, "plugin": r.plugin, "receiver": r.name, "tripped": tripped.get(r.id),
             "slow": slow.get(r.id)}
            for event in EVENT_HOOKS for r in receivers.receivers(event)]


# --- backfill as chunks of jobs (the ADMIN API) ---------------------------------------------
#
# A backfill started over HTTP is a record in the store (``backfills``: its parameters, how far
# it got, the chunk due next) and a chain of short jobs on the backfill queue. Each chunk
# delivers at most ``rate * CHUNK_SECONDS`` events (``CHUNK_EVENTS`` unpaced), walks past events
# already done without counting them against the pace, and enqueues the next chunk for the
# time the pace allows (RQ's scheduled registry, moved by the scheduler process). No job ever
# sleeps: a worker runs one chunk, then live work again. The record is the truth: the
# reconciler enqueues the due chunk of a backfill whose job Redis lost (``requeue_backfills``).

BACKFILLS = "backfills"
CHUNK_SECONDS = 5.0  # a paced chunk delivers what the rate allows in this long
CHUNK_EVENTS = 200  # an unpaced chunk delivers at most this many events
CHUNK_SCAN = 2000  # and a chunk looks at no more than this many past events
# Events a second a backfill may ask for: below the minimum a chunk would deliver nothing for
# minutes; above the maximum pacing means nothing.
MIN_RATE = 0.01
MAX_RATE = 10000.0
# The counts of Progress a backfill's record keeps from chunk to chunk.
COUNTS = ("seen", "delivered", "already_done", "not_acting", "redelivered_skipped")


def start_backfill_job(params: dict[str, Any]) -> str:
    """Store the backfill and enqueue its first chunk; its id names its record."""
    backfill_id = str(ObjectId())
    _store_backfill(backfill_id, params)
    _enqueue_chunk(backfill_id, 0)
    return backfill_id


def _store_backfill(backfill_id: str, params: dict[str, Any]) -> None:
    """The backfill's record, at its first chunk (kept as it is when it exists: a rerun)."""
    now = time.time()
    # Until now when not given: events of goals created during the backfill are live ones, and
    # the chunks' positions in the list of past events stay put.
    params = {**params, "until": params.get("until") if params.get("until") is not None else now}
    get_database()[BACKFILLS].update_one({"_id": backfill_id}, {"$setOnInsert": {
        "params": params, "state": "queued", "chunk": 0, "next_at": now,
        **{name: 0 for name in ("total", *COUNTS)},
        "started_at": now}}, upsert=True)


def run_backfill_job(backfill_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The backfill job of goalhub before backfills ran as chunks (one long job, its progress in
    Redis), still queued when the workers were upgraded (payload version 1): it becomes a chunked
    backfill under the same id, so ``GET /admin/backfill/<id>`` finds it in the store, and runs
    its first chunk here. A rerun finds the record moved on and does nothing more."""
    _store_backfill(backfill_id, params)
    get_redis().delete(f"goalhub:backfill:{backfill_id}")  # where that version kept its progress
    return run_backfill_chunk(backfill_id, 0)


def _chunk_job_id(backfill_id: str, chunk: int) -> str:
    return job_id("backfill", f"{backfill_id}-{chunk}")


def _enqueue_chunk(backfill_id: str, chunk: int, delay: float = 0) -> None:
    enqueue_once(get_queue("backfill"), run_backfill_chunk, backfill_id, chunk,
                 job_id=_chunk_job_id(backfill_id, chunk), delay=delay, retry=None,
                 description=f"backfill {backfill_id} chunk {chunk}")


def run_backfill_chunk(backfill_id: str, chunk: int) -> dict[str, Any]:
    """One chunk of the backfill ``backfill_id``; enqueues the next. A chunk run twice (a
    redelivered job) finds the record moved on and does nothing."""
    db = get_database()
    record = db[BACKFILLS].find_one({"_id": backfill_id})
    if record is None or record["chunk"] != chunk or record["state"] in ("finished", "failed"):
        return {"state": "not run", "reason": "chunk done already"}
    params = record["params"]
    rate = params.get("rate")
    progress = Progress(target=params["target"], event=params["event"], dry_run=bool(params.get("dry_run")),
                        started_at=record["started_at"],
                        **{name: record.get(name, 0) for name in COUNTS})
    began = time.time()
    try:
        chosen = target_receivers(params["target"], params["event"])
        events = past_events(params["event"], params.get("cls"), params.get("since"), params.get("until"))
        if chunk == 0:  # how many past events there are, counted once
            record["total"] = sum(1 for _ in past_events(params["event"], params.get("cls"), params.get("since"),
                                                         params.get("until")))
        budget = max(1, int(rate * CHUNK_SECONDS)) if rate else CHUNK_EVENTS
        delivered = scanned = 0
        more = False
        for arguments in itertools.islice(events, record["seen"], None):
            if delivered >= budget or scanned >= CHUNK_SCAN:
                more = True
                break
            scanned += 1
            before = progress.redelivered_skipped
            wanted = _undone(chosen, params["event"], arguments, progress, bool(params.get("redeliver_skipped")))
            delivered += progress.redelivered_skipped - before
            if wanted:
                _deliver(chosen, params["event"], arguments, wanted, progress)
                delivered += 1
    except Exception as exc:
        db[BACKFILLS].update_one({"_id": backfill_id, "chunk": chunk}, {"$set": {
            "state": "failed", "error": f"{type(exc).__name__}: {exc}"[:500], "finished_at": time.time()}})
        raise
    finished = not more
    next_at = began + delivered / rate if rate else time.time()
    moved = db[BACKFILLS].update_one({"_id": backfill_id, "chunk": chunk}, {"$set": {
        "state": "finished" if finished else "running", "chunk": chunk + 1, "next_at": next_at,
        "total": progress.seen if finished else max(record["total"], progress.seen),  # goals deleted meanwhile
        **{name: getattr(progress, name) for name in COUNTS},
        **({"finished_at": time.time()} if finished else {})}})
    if moved.modified_count and not finished:
        _enqueue_chunk(backfill_id, chunk + 1, delay=max(next_at - time.time(), 0))
    return {"state": "finished" if finished else "running", "chunk": chunk, "delivered": delivered}


def requeue_backfills(now: float | None = None) -> list[str]:
    """Enqueue the due chunk of every unfinished backfill whose chunk job is gone (Redis lost
    it); run by the reconciler. Returns the backfill ids."""
    db = get_database()
    due = (time.time() if now is None else now) - config.settings().RECONCILE_GRACE
    requeued = []
    for record in db[BACKFILLS].find({"state": {"$in": ["queued", "running"]}, "next_at": {"$lte": due}}):
        jid = _chunk_job_id(record["_id"], record["chunk"])
        job = Job.fetch_many([jid], connection=get_redis())[0]
        if job is not None and job.get_status(refresh=False) in PENDING:
            continue
        _enqueue_chunk(record["_id"], record["chunk"])
        requeued.append(record["_id"])
    return requeued


def backfill_progress(backfill_id: str) -> dict[str, Any]:
    record = get_database()[BACKFILLS].find_one({"_id": backfill_id})
    if record is None:
        raise NotFound("no such backfill", code="backfill_not_found", field="backfill_id")
    shown = {name: record.get(name) for name in ("state", "params", "total", "seen", "delivered", "already_done",
                                                 "not_acting", "started_at", "error")}
    elapsed = (record.get("finished_at") or time.time()) - record["started_at"]
    return {"backfill_id": backfill_id, **{k: v for k, v in shown.items() if v is not None},
            "rate": round(record["seen"] / max(elapsed, 1e-6), 1)}
