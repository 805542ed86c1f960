"""From a signal to receiver jobs, and from a receiver job to its recorded outcome.

The core is the one receiver connected to goalhub's signals. For each event it writes an
outcome record per plugin receiver (``skipped`` when the receiver does not act on the
goal's class, ``queued`` otherwise) and enqueues one RQ job per acting receiver. So a
receiver that raises never stops the others; it is retried alone with backoff (RQ's
``Retry``); after its last try it stays ``failed`` (in RQ's failed registry too) until
``retry_outcome``; and once ``ok`` it is never run again, however often its event is
delivered (redelivery, retries of the task that sent it, a second ``fire``).

Outcome ids are ``<event>:<goal_id>|<plugin>.<receiver>``; the receiver job's id derives
from it, so delivering one event twice names the same jobs. After the outcome records, an
``events`` document ``<event>:<goal_id>`` lists the receivers the event was delivered to.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from rq import Callback, get_current_job
from rq.job import Job

from goalhub import redaction, retention, signals
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.plugins import get_plugin_manager, plugin_info
from goalhub.queues import enqueue_once, get_queue, job_id
from goalhub.store import get_database


@dataclass(frozen=True)
class Receiver:
    event: str
    name: str
    plugin: str
    classes: frozenset[str] | None
    excluded: frozenset[str]
    function: Callable[..., Any]
    argnames: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.plugin}.{self.name}"

    def acts_on(self, goal_class: str) -> bool:
        return (self.classes is None or goal_class in self.classes) and goal_class not in self.excluded

    def call(self, arguments: dict[str, Any]) -> Any:
        # Keyword arguments only, and only those the receiver asks for.
        return self.function(**{name: arguments[name] for name in self.argnames if name in arguments})


def receivers(event: str) -> list[Receiver]:
    """The receivers of ``event`` in pluggy's call order (last registered first)."""
    hook = getattr(get_plugin_manager().hook, EVENT_HOOKS[event])
    found = []
    for impl in reversed(hook.get_hookimpls()):
        function = impl.function
        found.append(
            Receiver(
                event=event,
                name=function.__name__,
                plugin=impl.plugin_name,
                classes=getattr(function, "goalhub_classes", None),
                excluded=getattr(function, "goalhub_excluded", frozenset()),
                function=function,
                argnames=tuple(inspect.signature(function).parameters),
            )
        )
    return found


def find_receiver(event: str, receiver_id: str) -> Receiver | None:
    return next((r for r in receivers(event) if r.id == receiver_id), None)


def event_id(event: str, arguments: dict[str, Any]) -> str:
    return f"{event}:{arguments['goal_id']}"


def outcome_id(event_key: str, receiver: Receiver) -> str:
    return f"{event_key}|{receiver.id}"


def deliver(event: str, arguments: dict[str, Any]) -> list[str]:
    """Record and enqueue the receivers of one event; returns the ids of the jobs enqueued."""
    db = get_database()
    queue = get_queue()
    key = event_id(event, arguments)
    now = time.time()
    enqueued = []
    event_receivers = receivers(event)
    for receiver in event_receivers:
        info = plugin_info(receiver.plugin)
        record = {
            "event": event,
            "event_id": key,
            "goal_id": arguments["goal_id"],
            "_cls": arguments.get("_cls"),
            "receiver": receiver.name,
            "plugin": receiver.plugin,
            "dist": info.dist,
            "version": info.version,
        }
        _id = outcome_id(key, receiver)
        if not receiver.acts_on(arguments.get("_cls", "")):
            db.outcomes.update_one(
                {"_id": _id}, {"$setOnInsert": {**record, "status": "skipped", "at": now, **retention.stamp()}}, upsert=True
            )
            continue
        outcome = db.outcomes.find_one_and_update(
            {"_id": _id},
            {"$setOnInsert": {**record, "status": "queued", "attempts": 0, "queued_at": now, "arguments": arguments,
                              **retention.stamp()}},
            projection={"status": 1},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        if outcome["status"] in ("ok", "skipped"):
            continue
        job = enqueue_once(
            queue,
            run_receiver,
            _id,
            job_id=job_id("receiver", _id),
            on_failure=Callback(on_receiver_job_failure),
            description=f"{receiver.id} <- {key}",
        )
        if job is not None:
            enqueued.append(job.id)
    # Written last: once it is there, every receiver of the event has its outcome record, so
    # a reader can tell "all outcomes final" from "not all outcomes written yet".
    db.events.update_one(
        {"_id": key},
        {"$set": {"event": event, "goal_id": arguments["goal_id"], "delivered_at": time.time(),
                  "receivers": [receiver.id for receiver in event_receivers]}, "$setOnInsert": retention.stamp()},
        upsert=True,
    )
    return enqueued


def delivered_outcomes(goal_id: str, events: list[str] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """A goal's outcome records, and whether they are all written: every event they belong to
    has its ``events`` record (written after its outcomes), with as many outcomes as receivers."""
    db = get_database()
    query: dict[str, Any] = {"goal_id": goal_id}
    if events is not None:
        query["event"] = {"$in": list(events)}
    outcomes = list(db.outcomes.find(query))
    delivered = {e["event"]: len(e["receivers"]) for e in db.events.find(query)}
    written = {event: sum(1 for o in outcomes if o["event"] == event) for event in {o["event"] for o in outcomes}}
    complete = all(event in delivered and count >= delivered[event] for event, count in written.items())
    if events is not None:
        complete = complete and set(events) <= set(delivered)
    return outcomes, complete


def run_receiver(outcome_key: str) -> Any:
    """The job of one (event, receiver): run it unless it already succeeded, and record how it went."""
    db = get_database()
    started = time.time()
    outcome = db.outcomes.find_one_and_update(
        {"_id": outcome_key, "status": {"$nin": ["ok", "skipped"]}},
        {"$set": {"status": "running", "started_at": started}, "$inc": {"attempts": 1}},
    )
    if outcome is None:
        return {"status": "not run", "reason": "already done or unknown outcome"}
    receiver = find_receiver(outcome["event"], f"{outcome['plugin']}.{outcome['receiver']}")
    clock = time.perf_counter()
    try:
        if receiver is None:
            raise LookupError(f"receiver {outcome['plugin']}.{outcome['receiver']} is not installed")
        result = receiver.call(outcome["arguments"])
    except Exception as exc:
        job = get_current_job()
        retrying = bool(job and job.retries_left)
        db.outcomes.update_one(
            {"_id": outcome_key},
            {
                "$set": {
                    "status": "retrying" if retrying else "failed",
                    **redaction.failure_fields(exc),
                    "duration_ms": (time.perf_counter() - clock) * 1000,
                    "finished_at": time.time(),
                }
            },
        )
        raise
    db.outcomes.update_one(
        {"_id": outcome_key},
        {
            "$set": {
                "status": "ok",
                "result": _plain(result),
                "error": None,
                "duration_ms": (time.perf_counter() - clock) * 1000,
                "finished_at": time.time(),
            }
        },
    )
    # The RQ job result (shown by the dashboard) is a fixed summary: a receiver's return value
    # may carry user-supplied text; the detailed result stays in the outcome record.
    return {"status": "ok", "outcome": outcome_key}


def on_receiver_job_failure(job: Job, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ's failure callback of a receiver job. A receiver that raised has recorded its own
    failure; this catches the failures it could not record: its work-horse killed (RQ's
    abandoned-job handling), stopped by the job timeout. Left ``running``, such an outcome
    would never show as failed nor be retried by hand."""
    get_database().outcomes.update_one(
        {"_id": job.args[0], "status": "running"},
        {
            "$set": {
                "status": "retrying" if job.retries_left else "failed",
                **redaction.failure_fields_from(exc_type, exc_value),
                "finished_at": time.time(),
            }
        },
    )


def retry_outcome(outcome_key: str) -> str:
    """Run a failed receiver again (by hand: ``goalhub retry``); returns the job id."""
    db = get_database()
    outcome = db.outcomes.find_one_and_update(
        {"_id": outcome_key, "status": "failed"}, {"$set": {"status": "queued", "queued_at": time.time()}}
    )
    if outcome is None:
        raise LookupError(f"no failed outcome {outcome_key!r}")
    jid = job_id("retry", f"{outcome_key}|{outcome.get('attempts', 0)}")
    get_queue().enqueue(
        run_receiver, outcome_key, job_id=jid, on_failure=Callback(on_receiver_job_failure),
        description=f"retry {outcome_key}",
    )
    return jid


def dry_run(event: str, goal_class: str) -> list[tuple[Receiver, bool]]:
    """Which receivers of ``event`` would act on ``goal_class``; runs nothing."""
    return [(receiver, receiver.acts_on(goal_class)) for receiver in receivers(event)]


def _plain(value: Any) -> Any:
    """A receiver's return value as something the store keeps."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return repr(value)


def _on_signal(event: str, sender: str, **arguments: Any) -> None:
    deliver(event, arguments)


# The core's connection to its own signals (weak=False: a partial would vanish otherwise).
for _event, (_signal, _hook) in signals.EVENTS.items():
    _signal.connect(functools.partial(_on_signal, _event), sender=_event, weak=False)
