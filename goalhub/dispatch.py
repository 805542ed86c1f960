"""From a signal to its receivers' runs, each with its recorded outcome (who the receivers
are, and how one is called: ``goalhub.receivers``).

``deliver`` is the one receiver connected to goalhub's signals (``goalhub.signals`` connects
it). For each event it writes an
outcome record per plugin receiver in one batch (``skipped`` when the receiver does not act
on the goal's class, ``queued`` otherwise), then an ``events`` record, then runs the acting
receivers:

- **Inline**, in the common path: when the event is sent inside an RQ job (``create_goal``,
  ``end_goal``, a receiver sending ``goal.added``), its acting receivers run in that same
  work-horse, one after another, each with its own outcome record, its own ``try`` and its
  own time budget (``goalhub.budget``). Their records are written ``running`` (taken by this
  work-horse, first attempt) in the batch. One that returns is written to the ledger at once
  (``goalhub.ledger``: the fact that stops a second run), and its ``ok`` outcome with the
  event's other inline ones, in one batch once the event's inline runs are over (one
  transaction on the embedded store, one round trip on MongoDB); until then a reader sees it
  ``running``. One that raises or runs over its budget is recorded at once
  (``retrying`` / ``timed out``) and gets a job of its own: the retry path below.
- **As jobs**: a receiver declared ``isolated=True``, one whose turn comes when the job has
  under ``budget.START`` (0.5 s) left beyond its margin (it is not started, so the job's
  timeout does not cut it at once; that is not an attempt), a retry, an event sent outside a job
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
outcome records, so a reader that finds it knows every outcome record is written (on the
embedded store a first delivery writes them all in one transaction: ``store.insert_together``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from typing import Any, NoReturn

from bson import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError
from rq import Callback, Retry, get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from goalhub import breaker, budget, config, ledger, logs, metrics, redaction, retention, slowness, tracing
from goalhub.queues import PENDING, enqueue_once, get_queue, job_id
from goalhub.receivers import Receiver, find_receiver, receivers, targeted
from goalhub.store import get_database, insert_together, update_each

log = logging.getLogger(__name__)

# A receiver in one of these is never run again by a delivery or a job: ``retargeted`` (its work
# moved to another receiver) and ``dropped`` are an operator's decision (``goalhub.retarget``).
DONE = ("ok", "skipped", "retargeted", "dropped")
# The result of an outcome written ``ok`` because the ledger says its receiver finished the event.
FINISHED_BEFORE = {"finished_before": True}
# The ok outcomes of an event's inline runs, as (filter, update), written in one batch at its end.
OkWrites = list[tuple[dict[str, Any], dict[str, Any]]]
# Outcomes a reader waits on: the receiver has yet to run, or a retry of it is pending.
UNFINISHED = frozenset({"queued", "running", "retrying", "timed out"})


def event_id(event: str, arguments: dict[str, Any]) -> str:
    return f"{event}:{arguments['goal_id']}"


def outcome_id(event_key: str, receiver: Receiver) -> str:
    return f"{event_key}|{receiver.id}"


def outcome_parts(outcome_key: str) -> tuple[str, str]:
    """(event id, receiver id) of an outcome id (``outcome_id``'s inverse)."""
    event_key, _, receiver_id = outcome_key.rpartition("|")
    return event_key, receiver_id


def _inline_here() -> bool:
    """Whether receivers may run inline: inside an RQ job, on the thread that can take signals."""
    return get_current_job() is not None and threading.current_thread() is threading.main_thread()


def deliver(event: str, arguments: dict[str, Any], *, only: Collection[str] | None = None,
            backfill: bool = False) -> list[str]:
    """Record the receivers of one event and run the acting ones (inline, or as jobs: see the
    module's docstring). ``only``: receiver ids or plugin names to deliver to; no record is
    written for any other receiver. ``backfill``: the acting receivers run as jobs on the
    backfill queue, never inline. Returns the ids of the jobs enqueued. Traced as a span named
    after the event, the parent of its inline receivers' spans."""
    with tracing.span(event, {"goalhub.event": event, "goalhub.goal_id": arguments.get("goal_id")}):
        return _deliver(event, arguments, only=only, backfill=backfill)


def _deliver(event: str, arguments: dict[str, Any], *, only: Collection[str] | None, backfill: bool) -> list[str]:
    db = get_database()
    key = event_id(event, arguments)
    goal_class = arguments.get("_cls", "")
    disabled = set(config.settings().DISABLED_RECEIVERS)
    chosen = [r for r in receivers(event) if r.id not in disabled and targeted(r, only)]
    now = time.time()
    base = {"event": event, "event_id": key, "goal_id": arguments["goal_id"], "_cls": arguments.get("_cls"),
            "request_id": logs.current_request_id()}
    inline = not backfill and _inline_here()
    stamp = retention.stamp()  # ``stored_at``: when the record expires (goalhub.retention)
    documents, acting = [], []
    # Receivers that finished this event before, whatever retention purged since (goalhub.ledger).
    finished = ledger.finished(db, arguments["goal_id"]) if any(r.acts_on(goal_class) for r in chosen) else ()
    record_taken: dict[str, bool] = {}  # outcome id -> run inline by this delivery
    for receiver in chosen:
        record = {"_id": outcome_id(key, receiver), **base, "receiver": receiver.name, "plugin": receiver.plugin,
                  "dist": receiver.dist, "version": receiver.version, **stamp}
        if ledger.entry(event, receiver.id) in finished:
            record.update(status="ok", attempts=0, at=now, result=FINISHED_BEFORE)  # final, never run again
        elif receiver.acts_on(goal_class):
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
    ids = [receiver.id for receiver in chosen]
    fields = {"event": event, "goal_id": arguments["goal_id"], "delivered_at": now}
    announced = {"_id": key, **fields, "receivers": ids, **stamp}
    # The event record is written after the outcome records: once it is there, every receiver of
    # the event has its record, so a reader can tell "all outcomes final" from "not all outcomes
    # written yet". A first delivery on the embedded store writes them all in one transaction.
    existing: dict[str, str] = {}
    if not insert_together(db, [("outcomes", documents), ("events", [announced])]):
        existing = _insert_new(db, documents)
        for record in documents:
            if record.get("result") == FINISHED_BEFORE and existing.get(record["_id"], "ok") not in DONE:
                # Its record from an earlier delivery is not final, though the ledger has the run: a
                # process died between the two writes (goalhub.ledger). Final now, never run again.
                db.outcomes.update_one({"_id": record["_id"], "status": {"$nin": list(DONE)}},
                                       {"$set": {"status": "ok", "result": FINISHED_BEFORE, "finished_at": now}})
        try:  # the common case, a first delivery: an insert is the cheaper write
            db.events.insert_one(announced)
        except DuplicateKeyError:
            if only is None:
                db.events.update_one({"_id": key}, {"$set": {**fields, "receivers": ids}})
            else:
                db.events.update_one({"_id": key}, {"$set": fields, "$addToSet": {"receivers": {"$each": ids}}})
    for record in documents:
        if record["status"] == "skipped" and record["_id"] not in existing:
            metrics.receiver_outcome(record["plugin"], record["receiver"], "skipped", 0.0)

    enqueued: list[str] = []
    ran_ok: list[str] = []
    ok_writes: OkWrites = []
    try:
        for receiver in acting:
            _id = outcome_id(key, receiver)
            status = existing.get(_id)
            if status in DONE:
                continue
            if status is None and record_taken.get(_id):
                if budget.time_to_start():
                    job = _run_inline(db, receiver, _id, arguments, ran_ok, ok_writes)
                else:
                    # Taken inline, but the job has almost no time left: its own job instead, before
                    # it starts (not an attempt), rather than a run cut short by the job's timeout.
                    db.outcomes.update_one({"_id": _id, "status": "running"},
                                           {"$set": {"status": "queued", "attempts": 0, "arguments": arguments}})
                    job = enqueue_receiver(receiver, _id, key)
            else:
                # Isolated, outside a job, a backfill, or delivered before and not done: its own job
                # (none if one is pending already).
                if status is not None:  # taken inline by a horse that died: its job needs the arguments
                    keep_arguments(db, _id, arguments)
                job = enqueue_receiver(receiver, _id, key, queue="backfill" if backfill else "default")
            if job is not None:
                enqueued.append(job.id)
    finally:
        # In one write. Each is in the ledger already: a process that dies first loses none of them,
        # the next delivery of the event makes them ok (FINISHED_BEFORE) without running them.
        update_each(db.outcomes, ok_writes)
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
                ran_ok: list[str], ok_writes: OkWrites) -> Job | None:
    """Run a receiver whose outcome record this delivery just wrote; a job only if it failed.
    Its id joins ``ran_ok`` when it returned (the event logs them in one line), and its ok
    outcome ``ok_writes`` (the event writes them in one batch)."""
    if breaker.is_paused(receiver.id):
        _record_paused(db, outcome_key, arguments)
        return None
    retries = receiver.retries
    failure, _ = _attempt(db, receiver, outcome_key, arguments, retries_left=retries, quiet=True,
                          ok_writes=ok_writes)
    if failure is None:
        ran_ok.append(receiver.id)
    if failure is None or retries <= 0:
        return None
    # Today's retry path, alone: its own job after the first backoff, the rest of its retries on it.
    backoff = receiver.backoff
    return enqueue_receiver(receiver, outcome_key, outcome_parts(outcome_key)[0], retries=retries - 1,
                             backoff=backoff[1:] or backoff[-1:], delay=backoff[0])


def _attempt(db: Any, receiver: Receiver, outcome_key: str, arguments: dict[str, Any], *,
             retries_left: int, attempt: int = 1, quiet: bool = False,
             ok_writes: OkWrites | None = None) -> tuple[BaseException | None, Any]:
    """One run of a claimed receiver within its budget, recorded: (its exception or None, its
    result). A failure is always logged; an ok run unless ``quiet`` (its caller logs it). Traced
    as a span named after the receiver: its plugin, name, event, goal, ``attempt`` and outcome.
    ``ok_writes``: where its ok outcome goes for its caller to write (None: written here)."""
    if not tracing.enabled():
        failure, result, _ = _run(db, receiver, outcome_key, arguments, retries_left=retries_left, quiet=quiet,
                                  ok_writes=ok_writes)
        return failure, result
    event = outcome_parts(outcome_key)[0].partition(":")[0]
    with tracing.span(receiver.id, {"goalhub.plugin": receiver.plugin, "goalhub.receiver": receiver.name,
                                    "goalhub.event": event, "goalhub.goal_id": arguments.get("goal_id"),
                                    "goalhub.attempt": attempt}) as span:
        failure, result, status = _run(db, receiver, outcome_key, arguments, retries_left=retries_left, quiet=quiet,
                                       ok_writes=ok_writes)
        span.set({"goalhub.outcome": status})
        if failure is not None:
            span.error(failure)
        return failure, result


def _run(db: Any, receiver: Receiver, outcome_key: str, arguments: dict[str, Any], *,
         retries_left: int, quiet: bool,
         ok_writes: OkWrites | None) -> tuple[BaseException | None, Any, str]:
    """``_attempt``'s run and record: (its exception or None, its result, the outcome's status)."""
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
        if isinstance(exc, budget.ReceiverTimeout):  # its own budget; not the job's timeout
            slowness.record_overrun(receiver.id, seconds, receiver.budget)
        breaker.record_failure(receiver.id, outcome_parts(outcome_key)[0], fields["error"])
        metrics.receiver_outcome(receiver.plugin, receiver.name, "timed out" if timed_out else status, seconds)
        return exc, None, status
    seconds = time.perf_counter() - clock
    plain = _plain(result)
    _finish(db, outcome_key)  # the durable fact first (goalhub.ledger), then the outcome
    ok = {"$set": {"status": "ok", "result": plain, "error": None, "started_at": started,
                   "duration_ms": seconds * 1000, "finished_at": time.time(), "job_id": _job_id()}}
    if ok_writes is None:
        db.outcomes.update_one({"_id": outcome_key}, ok)
    else:
        ok_writes.append(({"_id": outcome_key}, ok))
    breaker.record_ok(receiver.id)
    metrics.receiver_outcome(receiver.plugin, receiver.name, "ok", seconds)
    if not quiet:
        log.info("receiver %s ok", receiver.id, extra={"outcome_id": outcome_key})
    return None, plain, "ok"


def _finish(db: Any, outcome_key: str) -> None:
    event_key, receiver_id = outcome_parts(outcome_key)
    event, _, goal_id = event_key.partition(":")
    ledger.finish(db, goal_id, event, receiver_id)


def finished_before(db: Any, outcome_key: str) -> bool:
    """Whether the ledger says the outcome's receiver finished its event (its outcome is then
    made ``ok``, without a run)."""
    event_key, receiver_id = outcome_parts(outcome_key)
    event, _, goal_id = event_key.partition(":")
    if ledger.entry(event, receiver_id) not in ledger.finished(db, goal_id):
        return False
    db.outcomes.update_one({"_id": outcome_key, "status": {"$nin": list(DONE)}},
                           {"$set": {"status": "ok", "result": FINISHED_BEFORE, "finished_at": time.time()}})
    return True


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


def enqueue_receiver(receiver: Receiver, outcome_key: str, event_key: str, *, queue: str = "default",
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


def recorded_at(outcome: dict[str, Any]) -> float:
    """When an outcome record was written: queued (acting receivers) or skipped (``at``)."""
    return outcome.get("queued_at") or outcome.get("at") or 0


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
    if finished_before(db, outcome_key):  # finished, whatever its outcome record says or lost
        return {"status": "not run", "reason": "finished before"}
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
    if receiver is None:  # renamed or removed by an upgrade, or not installed on this worker yet
        _cannot_run(db, outcome_key, f"receiver {receiver_id} is not installed on this worker: if a plugin upgrade "
                    f"renamed or removed it, `goalhub retarget {receiver_id} NEW_ID` or `goalhub drop "
                    f"{receiver_id}` (docs/RUNBOOK.md)", retries_left)
    if "arguments" not in outcome:  # never expected: every path that makes a job writes them first
        _cannot_run(db, outcome_key, f"outcome {outcome_key} has no recorded arguments to run it with", 0)
    failure, _ = _attempt(db, receiver, outcome_key, outcome["arguments"], retries_left=retries_left,
                          attempt=outcome.get("attempts", 0) + 1)
    if failure is not None:
        raise failure
    # The RQ job result (shown by the dashboard) is a fixed summary: a receiver's return value
    # may carry user-supplied text; the detailed result stays in the outcome record.
    return {"status": "ok", "outcome": outcome_key}


def _cannot_run(db: Any, outcome_key: str, reason: str, retries_left: int) -> NoReturn:
    """Record why a receiver job could not run its receiver at all, and fail the job."""
    status = "retrying" if retries_left else "failed"
    log.error("outcome %s %s: %s", outcome_key, status, reason, extra={"outcome_id": outcome_key})
    try:
        raise LookupError(reason)
    except LookupError as exc:
        db.outcomes.update_one({"_id": outcome_key}, {"$set": {
            "status": status, **redaction.failure_fields(exc), "finished_at": time.time()}})
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
    db.outcomes.update_one({"_id": outcome_key}, {"$set": {"job_id": jid}})  # what the reconciler looks for
    with tracing.span(f"{kind} {outcome_parts(outcome_key)[1]}", {"goalhub.goal_id": outcome.get("goal_id")},
                      kind="producer", parent=goal_trace(db, outcome.get("goal_id"))):
        get_queue(queue).enqueue(
            run_receiver, outcome_key, job_id=jid, on_failure=Callback(on_receiver_job_failure),
            description=f"{kind} {outcome_key}", meta=logs.job_meta({"request_id": outcome.get("request_id")}
                                                                  if outcome.get("request_id") else None),
        )
    return jid


def goal_trace(db: Any, goal_id: str | None) -> dict[str, str] | None:
    """The goal's stored trace context (``goalhub.tracing.stamp``), when tracing: what a job
    re-created for it (a retry, a resume, a job Redis lost) joins."""
    if not goal_id or not tracing.enabled() or not ObjectId.is_valid(goal_id):
        return None
    return (db.goals.find_one({"_id": ObjectId(goal_id)}, {tracing.FIELD: 1}) or {}).get(tracing.FIELD)


def requeue_unfinished(now: float | None = None, limit: int = 500) -> list[str]:
    """Enqueue again the receiver job of each unfinished outcome whose job is gone (Redis lost
    it): ``queued``, ``retrying`` or ``timed out`` for more than ``GOALHUB_RECONCILE_GRACE``, or
    ``running`` for longer than a job may run. Run by the reconciler; ``enqueue_once`` and the
    outcome's guard keep each run once. Returns the outcome ids."""
    db = get_database()
    now = time.time() if now is None else now
    due = now - config.settings().RECONCILE_GRACE
    # Two queries, each on the status index (a store plans no index for an $or): the unfinished
    # outcomes only, never every outcome retention keeps.
    queries = ({"status": {"$in": ["queued", "retrying", "timed out"]}, "queued_at": {"$lte": due}},
               {"status": "running", "started_at": {"$lte": due - config.settings().JOB_TIMEOUT}})
    fields = {"_id": 1, "event": 1, "plugin": 1, "receiver": 1, "job_id": 1, "status": 1, "finished_at": 1, "goal_id": 1}
    found: list[dict[str, Any]] = []
    for query in queries:
        found += db.outcomes.find({**query, "arguments": {"$exists": True}}, fields).limit(limit - len(found))
        if len(found) >= limit:
            break
    requeued = []
    for outcome in found:
        if outcome["status"] in ("retrying", "timed out") and (outcome.get("finished_at") or 0) > due:
            continue  # failed just now: its retry's backoff may still be ahead
        key = outcome["_id"]
        candidates = [job_id("receiver", key)] + ([outcome["job_id"]] if outcome.get("job_id") else [])
        if any(job is not None and job.get_status(refresh=False) in PENDING
               for job in Job.fetch_many(candidates, connection=get_queue().connection)):
            continue
        receiver = find_receiver(outcome["event"], f"{outcome['plugin']}.{outcome['receiver']}")
        if receiver is None:
            continue  # not installed here; its job would fail saying so
        with tracing.span(f"reconcile {receiver.id}", {"goalhub.goal_id": outcome.get("goal_id")}, kind="producer",
                          parent=goal_trace(db, outcome.get("goal_id"))):  # the job joins the goal's trace
            job = enqueue_receiver(receiver, key, outcome_parts(key)[0])
        if job is not None:
            requeued.append(key)
            log.warning("reconciler: outcome %s was %s with no job; enqueued again", key, outcome["status"],
                        extra={"outcome_id": key})
    return requeued


def _plain(value: Any) -> Any:
    """A receiver's return value as something the store keeps."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return repr(value)
