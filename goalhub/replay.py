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

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from goalhub import breaker, dispatch, slowness
from goalhub.connection import get_redis
from goalhub.errors import BadRequest, NotFound
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.queues import get_queue, job_id
from goalhub.store import get_database
from goalhub.tasks import created_arguments

# Where each event's time comes from, for --since/--until.
EVENT_TIME = {"goal.created": "created_at", "goal.ended": "ended_at", "goal.added": "delivered_at"}


def target_receivers(target: str, event: str | None = None) -> list[dispatch.Receiver]:
    """The installed receivers ``target`` names: ``plugin`` (all of its receivers) or
    ``plugin.receiver``; of ``event`` only, when given. None: a ``NotFound`` listing them."""
    events = [event] if event else list(EVENT_HOOKS)
    every = [r for e in events for r in dispatch.receivers(e)]
    found = [r for r in every if dispatch.targeted(r, {target})]
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
    (``redeliver_skipped``); ``outcomes``: the outcome ids this run created or redelivered."""

    target: str
    event: str
    total: int = 0
    seen: int = 0
    delivered: int = 0
    already_done: int = 0
    not_acting: int = 0
    redelivered_skipped: int = 0
    dry_run: bool = False
    started_at: float = field(default_factory=time.time)
    outcomes: list[str] = field(default_factory=list)

    def rate(self) -> float:
        return self.seen / max(time.time() - self.started_at, 1e-6)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "outcomes"} | {"rate": round(self.rate(), 1)}


def backfill(target: str, event: str, *, goal_class: str | None = None, since: float | None = None,
             until: float | None = None, dry_run: bool = False, rate: float | None = None,
             redeliver_skipped: bool = False, on_progress: Callable[[Progress], None] | None = None) -> Progress:
    """Deliver past ``event`` s to ``target`` only, at most ``rate`` events a second; see the module."""
    chosen = target_receivers(target, event)
    ids = {r.id for r in chosen}
    db = get_database()
    progress = Progress(target=target, event=event, dry_run=dry_run)
    query_total = list(past_events(event, goal_class, since, until))
    progress.total = len(query_total)
    for arguments in query_total:
        if rate:
            # Paced from the start, so a slow delivery does not make the next ones burst.
            pause = progress.started_at + progress.seen / rate - time.time()
            if pause > 0:
                time.sleep(pause)
        progress.seen += 1
        acting = [r for r in chosen if r.acts_on(arguments["_cls"])]
        if not acting:
            progress.not_acting += 1
        else:
            key = dispatch.event_id(event, arguments)
            wanted = [dispatch.outcome_id(key, r) for r in acting]
            found = {o["_id"]: o["status"] for o in db.outcomes.find({"_id": {"$in": wanted}}, {"status": 1})}
            done = set(found)
            skipped = [w for w in wanted if found.get(w) == "skipped"] if redeliver_skipped else []
            for outcome_key in skipped:  # acts on the class now, skipped then: once
                if dry_run or _redeliver_skipped(outcome_key, arguments):
                    progress.redelivered_skipped += 1
                    progress.outcomes.append(outcome_key)
            if len(done) == len(wanted):
                progress.already_done += 0 if skipped else 1
            else:
                progress.delivered += 1
                progress.outcomes += [w for w in wanted if w not in done]
                if not dry_run:
                    dispatch.deliver(event, arguments, only=ids, backfill=True)
        if on_progress:
            on_progress(progress)
    return progress


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
             "slow": slow.get(r.id)} for event in EVENT_HOOKS for r in dispatch.receivers(event)]


# --- backfill as a job (the ADMIN API) -------------------------------------------------------


def progress_key(backfill_id: str) -> str:
    return f"goalhub:backfill:{backfill_id}"


def start_backfill_job(params: dict[str, Any]) -> str:
    """Enqueue ``run_backfill_job`` on the backfill queue; its id names its progress record."""
    backfill_id = str(ObjectId())
    get_redis().set(progress_key(backfill_id), json.dumps({"state": "queued", "params": params}),
                    ex=7 * 24 * 3600)
    get_queue("backfill").enqueue(run_backfill_job, backfill_id, params, job_id=job_id("backfill", backfill_id),
                                  job_timeout=24 * 3600, description="backfill")
    return backfill_id


def run_backfill_job(backfill_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The job behind ``POST /admin/backfill``: runs the backfill and keeps its progress in Redis."""
    key = progress_key(backfill_id)

    def save(progress: Progress, state: str) -> None:
        get_redis().set(key, json.dumps({"state": state, "params": params, **progress.summary()}),
                        ex=7 * 24 * 3600)

    last = [0.0]

    def report(progress: Progress) -> None:
        if time.monotonic() - last[0] > 0.5 or progress.seen == progress.total:
            last[0] = time.monotonic()
            save(progress, "running")

    try:
        progress = backfill(params["target"], params["event"], goal_class=params.get("cls"),
                            redeliver_skipped=bool(params.get("redeliver_skipped")),
                            since=params.get("since"), until=params.get("until"),
                            dry_run=bool(params.get("dry_run")), rate=params.get("rate"), on_progress=report)
    except Exception as exc:
        get_redis().set(key, json.dumps({"state": "failed", "params": params,
                                         "error": f"{type(exc).__name__}: {exc}"}), ex=7 * 24 * 3600)
        raise
    save(progress, "finished")
    return {"state": "finished", "delivered": progress.delivered, "already_done": progress.already_done}


def backfill_progress(backfill_id: str) -> dict[str, Any]:
    raw = get_redis().get(progress_key(backfill_id))
    if raw is None:
        raise NotFound("no such backfill", code="backfill_not_found", field="backfill_id")
    return {"backfill_id": backfill_id, **json.loads(raw)}
