"""From a signal to its receivers' runs, each with its recorded outcome.

The core is the one receiver connected to goalhub's signals. For each event it writes an
outcome record per plugin receiver in one batch (``skipped`` when the receiver does not act
on the goal's class, ``queued`` otherwise), then an ``events`` record, then runs the acting
receivers:

- **Inline**, in the common path: when the event is sent inside an RQ job (``create_goal``,
  ``end_goal``, a receiver sending ``goal.added``), its acting receivers run in that same
  work-horse, one after another, each with its own outcome record, its own ``try`` and its
  own time budget (``goalhub.budget``). Their records are written ``running`` (taken by this
  work-horse, first attempt) in the batch, so each costs one more write: its outcome. One
  that raises or runs over its budget is recorded
  (``retrying`` / ``timed out``) and gets a job of its own: the retry path below. The others
  are final at once.
- **As jobs**: a receiver declared ``isolated=True``, a retry, an event sent outside a job
  (``goalhub fire``, a test calling a task directly), and a backfill (``backfill=True``, on the
  ``<prefix>-backfill`` queue) run as one ``run_receiver`` RQ job per (event, receiver),
  retried alone with the receiver's backoff; after its last try a receiver stays ``failed``
  (in RQ's failed registry too) until ``retry_outcome``.

Either way a receiver that is ``ok`` is never run again, however often its event is
delivered (redelivery, a rerun of the job that sent it, a second ``fire``): a fresh outcome
record is run by the delivery that inserted it, an existing one only by a job that claims it
while it is not ``ok``. ``breaker.is_paused`` is asked right before each run.

Outcome ids are ``<event>:<goal_id>|<plugin>.<receiver>``; a receiver job's id derives from
it, so delivering one event twice names the same jobs. The ``events`` document
``<event>:<goal_id>`` lists the receivers the event was delivered to; it is written after the
outcome records, so a reader that finds it knows every outcome record is written.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NoReturn

from pymongo.errors import BulkWriteError, DuplicateKeyError
from rq import Callback, Retry, get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from goalhub import breaker, budget, config, logs, metrics, redaction, retention, signals, slowness
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.plugins import get_plugin_manager, plugin_info
from goalhub.queues import enqueue_once, get_queue, job_id
from goalhub.store import get_database

# A receiver in one of these is never run again by a delivery or a job.
log = logging.getLogger(__name__)

DONE = ("ok", "skipped")
# Outcomes a reader waits on: the receiver has yet to run, or a retry of it is pending.
UNFINISHED = frozenset({"queued", "running", "retrying", "timed out"})


@dataclass(frozen=True)
class Receiver:
    event: str
    name: str
    plugin: str
    classes: frozenset[str] | None
    excluded: frozenset[str]
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    dist: str | None = None
    version: str | None = None
    declared: tuple[tuple[str, Any], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.plugin}.{self.name}"

    def acts_on(self, goal_class: str) -> bool:
        return (self.classes is None or goal_class in self.classes) and goal_class not in self.excluded

    def call(self, arguments: dict[str, Any]) -> Any:
        # Keyword arguments only, and only those the receiver asks for.
        return self.function(**{name: arguments[name] for name in self.argnames if name in arguments})

    # Settings: the operator's per-receiver variable, else the declaration, else the global
    # variable. Read when asked, so a changed environment takes effect without a reload.

    @property
    def isolated(self) -> bool:
        return bool(dict(self.declared).get("isolated", False))

    @property
    def budget(self) -> float:
        return float(self._setting("budget", config.receiver_budget))

    @property
    def retries(self) -> int:
        return int(self._setting("retries", config.receiver_retries))

    @property
    def backoff(self) -> tuple[int, ...]:
        value = self._setting("backoff", config.receiver_backoff)
        if isinstance(value, str):
            value = [int(part) for part in value.split(",") if part.strip()]
        return tuple(value) or (0,)

    def _setting(self, name: str, default: Callable[[], Any]) -> Any:
        raw = config.receiver_setting(name, self.id)
        if raw is not None:
            return raw
        declared = dict(self.declared).get(name)
        return declared if declared is not None else default()

    def settings(self) -> dict[str, Any]:
        """Its effective settings and where each comes from (for ``goalhub hooks``)."""
        shown: dict[str, Any] = {"isolated": self.isolated}
        for name in ("budget", "retries", "backoff"):
            variable = config.receiver_variable(name, self.id)
            source = ("env " + variable if config.receiver_setting(name, self.id) is not None
                      else "declared" if dict(self.declared).get(name) is not None else "default")
            shown[name] = {"value": list(getattr(self, name)) if name == "backoff" else getattr(self, name),
                           "from": source}
        shown["disabled"] = self.id in config.disabled_receivers()
        return shown


# (event, the hook's implementations) -> its receivers: built once, not per event.
_receivers_cache: dict[tuple[Any, ...], list[Receiver]] = {}


def receivers(event: str) -> list[Receiver]:
    """The receivers of ``event`` in pluggy's call order (last registered first)."""
    impls = getattr(get_plugin_manager().hook, EVENT_HOOKS[event]).get_hookimpls()
    key = (event, *((impl.plugin_name, impl.function) for impl in impls))
    found = _receivers_cache.get(key)
    if found is None:
        found = [_receiver(event, impl) for impl in reversed(impls)]
        if len(_receivers_cache) > 256:  # plugins registered and unregistered over and over (tests)
            _receivers_cache.clear()
        _receivers_cache[key] = found
    return found


def _receiver(event: str, impl: Any) -> Receiver:
    function = impl.function
    info = plugin_info(impl.plugin_name)
    return Receiver(
        event=event,
        name=function.__name__,
        plugin=impl.plugin_name,
        classes=getattr(function, "goalhub_classes", None),
        excluded=getattr(function, "goalhub_excluded", frozenset()),
        function=function,
        argnames=tuple(inspect.signature(function).parameters),
        dist=info.dist,
        version=info.version,
        declared=tuple(sorted(getattr(function, "goalhub_options", {}).items())),
    )


def find_receiver(event: str, receiver_id: str) -> Receiver | None:
    return next((r for r in receivers(event) if r.id == receiver_id), None)


def event_id(event: str, arguments: dict[str, Any]) -> str:
    return f"{event}:{arguments['goal_id']}"


def outcome_id(event_key: str, receiver: Receiver) -> str:
    return f"{event_key}|{receiver.id}"


def outcome_parts(outcome_key: str) -> tuple[str, str]:
    """(event id, receiver id) of an outcome id (``outcome_id``'s inverse)."""
    event_key, _, receiver_id = outcome_key.rpartition("|")
    return event_key, receiver_id


def targeted(receiver: Receiver, only: Collection[str] | None) -> bool:
    """Whether ``receiver`` is among ``only`` (receiver ids ``plugin.receiver`` or plugin names; None: all)."""
    return only is None or receiver.id in only or receiver.plugin in only


def _inline_here() -> bool:
    """Whether receivers may run inline: inside an RQ job, on the thread that can take signals."""
    return get_current_job() is not None and threading.current_thread() is threading.main_thread()


def deliver(event: str, arguments: dict[str, Any], *, only: Collection[str] | None = None,
            backfill: bool = False) -> list[str]:
    """Record the receivers of one event and run the acting ones (inline, or as jobs: see the
    module's docstring). ``only``: receiver ids or plugin names to deliver to; no record is
    written for any other receiver. ``backfill``: the acting receivers run as jobs on the
    backfill queue, never inline. Returns the ids of the jobs enqueued."""
    db = get_database()
    key = event_id(event, arguments)
    goal_class = arguments.get("_cls", "")
    disabled = config.disabled_receivers()
    chosen = [r for r in receivers(event) if r.id not in disabled and targeted(r, only)]
    now = time.time()
    base = {"event": event, "event_id": key, "goal_id": arguments["goal_id"], "_cls": arguments.get("_cls"),
            "request_id": logs.current_request_id()}
    inline = not backfill and _inline_here()
    stamp = retention.stamp()  # ``stored_at``: when the record expires (goalhub.retention)
    documents, acting = [], []
    record_taken: dict[str, bool] = {}  # outcome id -> run inline by this delivery
    for receiver in chosen:
        record = {"_id": outcome_id(key, receiver), **base, "receiver": receiver.name, "plugin": receiver.plugin,
                  "dist": receiver.dist, "version": receiver.version, **stamp}
        if receiver.acts_on(goal_class):
            # Run inline, it is taken by this work-horse now: ``running``, its first attempt (a
            # horse that dies mid-event leaves it so, and its rerun counts a second attempt).
            # Its own ``started_at`` is written with its outcome. Else ``queued`` for its own job,
            # which reads the event's arguments from the record; an inline run has them at hand
            # and writes them only when a job will need them (``keep_arguments``).
            taken = inline and not receiver.isolated and not slowness.is_isolated(receiver.id)
            record.update(status="running" if taken else "queued", attempts=int(taken), queued_at=now)
            record_taken[record["_id"]] = taken
            if not taken:
                record["arguments"] = arguments
            acting.append(receiver)
        else:
            record.update(status="skipped", at=now)
        documents.append(record)
    existing = _insert_new(db, documents)
    for record in documents:
        if record["status"] == "skipped" and record["_id"] not in existing:
            metrics.receiver_outcome(record["plugin"], record["receiver"], "skipped", 0.0)
    # Written after the outcome records: once it is there, every receiver of the event has its
    # record, so a reader can tell "all outcomes final" from "not all outcomes written yet".
    ids = [receiver.id for receiver in chosen]
    fields = {"event": event, "goal_id": arguments["goal_id"], "delivered_at": now}
    try:  # the common case, a first delivery: an insert is the cheaper write
        db.events.insert_one({"_id": key, **fields, "receivers": ids, **stamp})
    except DuplicateKeyError:
        if only is None:
            db.events.update_one({"_id": key}, {"$set": {**fields, "receivers": ids}})
        else:
            db.events.update_one({"_id": key}, {"$set": fields, "$addToSet": {"receivers": {"$each": ids}}})

    enqueued: list[str] = []
    ran_ok: list[str] = []
    try:
        for receiver in acting:
            _id = outcome_id(key, receiver)
            status = existing.get(_id)
            if status in DONE:
                continue
            if status is None and record_taken.get(_id):
                job = _run_inline(db, receiver, _id, arguments, ran_ok)
            else:
                # Isolated, outside a job, a backfill, or delivered before and not done: its own job
                # (none if one is pending already).
                if status is not None:  # taken inline by a horse that died: its job needs the arguments
                    keep_arguments(db, _id, arguments)
                job = _enqueue_receiver(receiver, _id, key, queue="backfill" if backfill else "default")
            if job is not None:
                enqueued.append(job.id)
    finally:
        if ran_ok:  # one line for the event's inline runs that went well (each failure has its own)
            log.info("%s: %s", key, ", ".join(f"{receiver_id} ok" for receiver_id in ran_ok), extra={"event_id": key})
    return enqueued


def _insert_new(db: Any, documents: list[dict[str, Any]]) -> dict[str, str]:
    """Insert the outcome records in one batch; returns {id: status} of those that existed."""
    if not documents:
        return {}
    try:
        db.outcomes.insert_many(documents, ordered=False)
        return {}
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != 11000 for error in errors):
            raise
        duplicates = [documents[error["index"]]["_id"] for error in errors]
    return {o["_id"]: o["status"] for o in db.outcomes.find({"_id": {"$in": duplicates}}, {"status": 1})}


def _run_inline(db: Any, receiver: Receiver, outcome_key: str, arguments: dict[str, Any],
                ran_ok: list[str]) -> Job | None:
    """Run a receiver whose outcome record this delivery just wrote; a job only if it failed.
    Its id joins ``ran_ok`` when it returned (the event logs them in one line)."""
    if breaker.is_paused(receiver.id):
        _record_paused(db, outcome_key, arguments)
        return None
    retries = receiver.retries
    failure, _ = _attempt(db, receiver, outcome_key, arguments, retries_left=retries, quiet=True)
    if failure is None:
        ran_ok.append(receiver.id)
    if failure is None or retries <= 0:
        return None
    # Today's retry path, alone: its own job after the first backoff, the rest of its retries on it.
    backoff = receiver.backoff
    return _enqueue_receiver(receiver, outcome_key, outcome_parts(outcome_key)[0], retries=retries - 1,
                             backoff=backoff[1:] or backoff[-1:], delay=backoff[0])


def _attempt(db: Any, receiver: Receiver, outcome_key: str, arguments: dict[str, Any], *,
             retries_left: int, quiet: bool = False) -> tuple[BaseException | None, Any]:
    """One run of a claimed receiver within its budget, recorded: (its exception or None, its
    result). A failure is always logged; an ok run unless ``quiet`` (its caller logs it)."""
    started = time.time()
    clock = time.perf_counter()
    try:
        with budget.limit(receiver.budget, receiver.id):
            result = receiver.call(arguments)
    except Exception as exc:
        seconds = time.perf_counter() - clock
        timed_out = isinstance(exc, JobTimeoutException)
        status = "failed" if retries_left <= 0 else "timed out" if timed_out else "retrying"
        fields = redaction.failure_fields(exc)
        db.outcomes.update_one(  # with the arguments: a retry, ``goalhub retry`` or a resume runs it as a job
            {"_id": outcome_key},
            {"$set": {"status": status, **fields, "timed_out": timed_out, "started_at": started,
                      "duration_ms": seconds * 1000, "finished_at": time.time(), "job_id": _job_id(),
                      "arguments": arguments}},
        )
        log.warning("receiver %s %s: %s", receiver.id, "timed out" if timed_out else status, fields["error"],
                    extra={"outcome_id": outcome_key})
        if timed_out:
            slowness.record_overrun(receiver.id, seconds, receiver.budget)
        breaker.record_failure(receiver.id, outcome_parts(outcome_key)[0], fields["error"])
        metrics.receiver_outcome(receiver.plugin, receiver.name, "timed out" if timed_out else status, seconds)
        return exc, None
    seconds = time.perf_counter() - clock
    plain = _plain(result)
    db.outcomes.update_one(
        {"_id": outcome_key},
        {"$set": {"status": "ok", "result": plain, "error": None, "started_at": started,
                  "duration_ms": seconds * 1000, "finished_at": time.time(), "job_id": _job_id()}},
    )
    breaker.record_ok(receiver.id)
    metrics.receiver_outcome(receiver.plugin, receiver.name, "ok", seconds)
    if not quiet:
        log.info("receiver %s ok", receiver.id, extra={"outcome_id": outcome_key})
    return None, plain


def _job_id() -> str | None:
    """The RQ job that ran the receiver: the one that sent the event (inline), or its own."""
    job = get_current_job()
    return job.id if job is not None else None


def keep_arguments(db: Any, outcome_key: str, arguments: dict[str, Any]) -> None:
    """Write the event's arguments into an outcome record that lacks them (an inline run's)."""
    db.outcomes.update_one({"_id": outcome_key, "arguments": {"$exists": False}}, {"$set": {"arguments": arguments}})


def _record_paused(db: Any, outcome_key: str, arguments: dict[str, Any] | None = None) -> None:
    """Its receiver is tripped: the outcome is ``paused`` (unless done), not run, not an attempt.
    ``arguments``: an inline run's, for the job that runs it once it is resumed."""
    paused: dict[str, Any] = {"status": "paused", "paused_at": time.time()}
    if arguments is not None:
        paused["arguments"] = arguments
    if db.outcomes.update_one({"_id": outcome_key, "status": {"$nin": list(DONE)}},
                              {"$set": paused}).modified_count:
        # A receiver's name has no dot; a plugin's (``goalhub.lifecycle``) may.
        plugin, _, name = outcome_parts(outcome_key)[1].rpartition(".")
        metrics.receiver_outcome(plugin, name, "paused", 0.0)


def _enqueue_receiver(receiver: Receiver, outcome_key: str, event_key: str, *, queue: str = "default",
                      retries: int | None = None, backoff: tuple[int, ...] | None = None,
                      delay: float = 0) -> Job | None:
    """The receiver's own ``run_receiver`` job, with its retries and backoff (after ``delay``)."""
    retries = receiver.retries if retries is None else retries
    backoff = receiver.backoff if backoff is None else backoff
    return enqueue_once(
        get_queue(queue), run_receiver, outcome_key,
        job_id=job_id("receiver", outcome_key),
        retry=Retry(max=retries, interval=list(backoff)) if retries > 0 else None,
        on_failure=Callback(on_receiver_job_failure),
        description=f"{receiver.id} <- {event_key}",
        delay=delay,
    )


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
    if breaker.is_paused(outcome_parts(outcome_key)[1]):  # tripped: no run, and no retry after this
        _record_paused(db, outcome_key)
        return {"status": "paused"}
    # The guard: a receiver that is ok (or skipped) is never run again, whatever job runs.
    outcome = db.outcomes.find_one_and_update(
        {"_id": outcome_key, "status": {"$nin": list(DONE)}},
        {"$set": {"status": "running", "started_at": time.time()}, "$inc": {"attempts": 1}},
    )
    if outcome is None:
        return {"status": "not run", "reason": "already done or unknown outcome"}
    receiver_id = f"{outcome['plugin']}.{outcome['receiver']}"
    receiver = find_receiver(outcome["event"], receiver_id)
    job = get_current_job()
    retries_left = (job.retries_left or 0) if job else 0
    if receiver is None:
        _cannot_run(db, outcome_key, f"receiver {receiver_id} is not installed", retries_left)
    if "arguments" not in outcome:  # never expected: every path that makes a job writes them first
        _cannot_run(db, outcome_key, f"outcome {outcome_key} has no recorded arguments to run it with", 0)
    failure, _ = _attempt(db, receiver, outcome_key, outcome["arguments"], retries_left=retries_left)
    if failure is not None:
        raise failure
    # The RQ job result (shown by the dashboard) is a fixed summary: a receiver's return value
    # may carry user-supplied text; the detailed result stays in the outcome record.
    return {"status": "ok", "outcome": outcome_key}


def _cannot_run(db: Any, outcome_key: str, reason: str, retries_left: int) -> NoReturn:
    """Record why a receiver job could not run its receiver at all, and fail the job."""
    try:
        raise LookupError(reason)
    except LookupError as exc:
        db.outcomes.update_one({"_id": outcome_key}, {"$set": {
            "status": "retrying" if retries_left else "failed", **redaction.failure_fields(exc),
            "finished_at": time.time()}})
        raise


def on_receiver_job_failure(job: Job, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ's failure callback of a receiver job. A receiver that raised has recorded its own
    failure; this catches the failures it could not record: its work-horse killed (RQ's
    abandoned-job handling), stopped by the job timeout. Left ``running``, such an outcome
    would never show as failed nor be retried by hand."""
    status = "retrying" if job.retries_left else "failed"
    if not isinstance(exc_value, BaseException):
        exc_value = RuntimeError(f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}")
    try:  # failure_fields reads the exception being handled
        raise exc_value
    except BaseException as exc:
        fields = redaction.failure_fields(exc)
    recorded = get_database().outcomes.update_one(
        {"_id": job.args[0], "status": "running"},
        {"$set": {"status": status, **fields, "finished_at": time.time()}},
    )
    if recorded.modified_count:  # a failed run the receiver could not count itself
        event_key, receiver_id = outcome_parts(job.args[0])
        breaker.record_failure(receiver_id, event_key, str(fields.get("error")))


def retry_outcome(outcome_key: str, *, statuses: Collection[str] = ("failed",), kind: str = "retry",
                  queue: str = "default") -> str:
    """Run a receiver again whose outcome is in ``statuses``: a failed one by hand (``goalhub
    retry``), or a paused or failed one when its breaker is closed (``kind="resume"``, on the
    backfill queue). Returns the job id; ``LookupError`` when the outcome is in none of them."""
    db = get_database()
    outcome = db.outcomes.find_one_and_update(
        {"_id": outcome_key, "status": {"$in": list(statuses)}},
        {"$set": {"status": "queued", "queued_at": time.time()}},
    )
    if outcome is None:
        raise LookupError(f"no {' or '.join(statuses)} outcome {outcome_key!r}")
    jid = job_id(kind, f"{outcome_key}|{outcome.get('attempts', 0)}")
    get_queue(queue).enqueue(
        run_receiver, outcome_key, job_id=jid, on_failure=Callback(on_receiver_job_failure),
        description=f"{kind} {outcome_key}",
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
