"""The scheduler process: rq-scheduler's loop, its liveness, the reconciler that loses no goal
to a deleted job, and the embedded store's purge. ``goalhub.queues`` keeps the scheduled jobs
themselves (``get_scheduler``: enqueue at a time, cancel, list).

Liveness: each scheduler process writes a heartbeat (``<prefix>:scheduler:<name>``: host,
pid, last poll, whether it held rq-scheduler's lock) at most once a second while it runs,
and names itself the lock holder (``<prefix>:scheduler-lock-holder``) when it takes the
lock. Both expire, so a dead scheduler disappears from the dashboard within a minute.

Reconciler: ``goalhub.tasks.schedule`` marks a goal with ``lifecycle.activate_at`` /
``lifecycle.end_at`` when it schedules its activation or end, and lists the kind in
``lifecycle.pending`` until the job has run (the reconciler reads only the goals listed there,
through an index: its work follows the pending goals, not all goals). Every
``GOALHUB_RECONCILE_INTERVAL`` seconds the scheduler holding the lock looks for marked goals
whose time passed (more than ``GOALHUB_RECONCILE_GRACE`` ago) and which are still inactive
(activation) or not ended (end) with no pending lifecycle job: the job was deleted (from
the dashboard, by hand) or lost. It enqueues the job now, on the lifecycle queue: the goal
is activated or ended late, and ``goalhub_reconciled_total`` counts it. It also puts back on
its queue a job a worker took off it and died before starting (``goalhub.recovery.requeue_lost_jobs``).

Redis may lose everything (README, "What lives in Redis"); the reconciler rebuilds from the
store what was lost with it: accepted goals whose ``create_goal`` job is gone
(``goalhub.outbox``), end requests (``end_requested_at``) whose job is gone, receiver jobs
of unfinished outcomes (``goalhub.dispatch.requeue_unfinished``), the due chunk of a
backfill in progress (``goalhub.replay.requeue_backfills``) and plugins' own jobs
(``goalhub.durable``).

Purge: every ``GOALHUB_PURGE_INTERVAL`` seconds the running scheduler deletes the embedded
store's expired records (``goalhub.retention``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bson import ObjectId
from rq.job import Job

from goalhub import config, durable, liveness, logs, metrics, outbox, retention, tracing
from goalhub.connection import REDIS_GONE, get_redis, wait_for_redis
from goalhub.dispatch import requeue_unfinished
from goalhub.queues import PENDING, Scheduler, get_queue, job_id
from goalhub.recovery import requeue_lost_jobs
from goalhub.replay import requeue_backfills
from goalhub.store import get_database
from goalhub.tasks import LIFECYCLE_PENDING, activate_goal, end_goal, scheduled_before

log = logging.getLogger(__name__)

class SchedulerProcess(Scheduler):
    """The scheduler process: rq-scheduler's loop (``goalhub.queues.Scheduler``) that also
    beats (liveness, and the reconciler while it holds the lock) and purges the embedded store.

    An idle poll costs one round trip. rq-scheduler polls whole every ``interval``: its
    heartbeat, its lock, RQ's registry locks, the moves, goalhub's beat; about 15 round trips,
    about 70 ms of CPU a second at 20 polls a second with nothing to do. Here each poll asks whether a
    job is due (``Scheduler.due``), and polls whole when one is, and at least every
    ``liveness.BEAT_EVERY`` seconds for the heartbeat, the reconciler and the purge."""

    def run(self, burst: bool = False) -> None:
        self.register_birth()
        self._install_signal_handlers()
        self._running = True  # RQ's registry locks are kept between polls (Scheduler.enqueue_jobs)
        whole_at = 0.0
        try:
            while True:
                start = time.time()
                if start >= whole_at or self.due():
                    self.poll()
                    if burst:
                        return
                    whole_at = start + liveness.BEAT_EVERY
                pause = self._interval - (time.time() - start)
                if pause > 0:
                    time.sleep(pause)
        finally:
            self._running = False
            self.remove_lock()
            self.register_death()
            if hasattr(self, "_rq_scheduler"):
                self._rq_scheduler.release_locks()

    def poll(self) -> None:
        """One whole poll, as rq-scheduler's loop makes it: beat, take its lock, move the due jobs."""
        self.heartbeat()
        if self.acquire_lock():
            self.enqueue_jobs()
            self.heartbeat()
            self.remove_lock()
        else:
            log.debug("another scheduler holds rq-scheduler's lock: it moves the due jobs")

    def enqueue_jobs(self) -> Any:
        jobs = super().enqueue_jobs()
        if getattr(self, "_running", False):
            retention.purge_when_due(get_database())  # the embedded store's expiry (goalhub.retention)
        return jobs

    def heartbeat(self) -> None:
        super().heartbeat()
        beat(self)  # liveness for the dashboard; overdue goals while holding the lock


def process(interval: float | None = None) -> SchedulerProcess:
    """The scheduler process's rq-scheduler, polling every ``interval`` seconds
    (``GOALHUB_SCHEDULER_INTERVAL``)."""
    return SchedulerProcess(
        queue=get_queue("lifecycle"),
        connection=get_redis(),
        interval=interval if interval is not None else config.settings().SCHEDULER_INTERVAL,
    )


def run_scheduler(*, interval: float | None = None, burst: bool = False) -> None:
    """Run rq-scheduler: moves due ``activate_goal``/``end_goal`` jobs to the lifecycle queue.
    A Redis outage pauses it; it goes on once Redis is back (scheduled jobs are kept there)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(message)s")
    tracing.configure("scheduler")  # what the reconciler re-creates joins its goal's trace
    while True:
        try:
            return process(interval).run(burst=burst)
        except REDIS_GONE as exc:
            if burst:
                raise
            log.error("scheduler lost Redis (%s); waiting for it", exc)
            wait_for_redis()


def beat(scheduler: Any, *, force: bool = False) -> None:
    """Record that ``scheduler`` (a ``SchedulerProcess``) polled (``goalhub.liveness``), at most
    once a second; while it holds rq-scheduler's lock, run the reconciler when it is due."""
    holds_lock = bool(getattr(scheduler, "_lock_acquired", False))
    if liveness.record_poll(scheduler, holds_lock=holds_lock, force=force) and holds_lock:
        maybe_reconcile()


def maybe_reconcile() -> dict[str, list[str]] | None:
    """Run ``reconcile`` if ``GOALHUB_RECONCILE_INTERVAL`` passed since the last run (any scheduler)."""
    interval = config.settings().RECONCILE_INTERVAL
    if interval <= 0:
        return None
    if not get_redis().set(liveness.key("reconcile", "last"), time.time(), nx=True, px=max(int(interval * 1000), 1)):
        return None
    try:
        return reconcile()
    except Exception:
        log.exception("the reconciler failed; it runs again in %s s", interval)
        return None


def _pending(jid: str) -> bool:
    job = Job.fetch_many([jid], connection=get_redis())[0]
    return job is not None and job.get_status(refresh=False) in PENDING


def reconcile(now: float | None = None) -> dict[str, list[str]]:
    """Activate or end, late, the overdue goals that have no pending lifecycle job; returns their ids."""
    db = get_database()
    due = (now if now is not None else time.time()) - config.settings().RECONCILE_GRACE
    done: dict[str, list[str]] = {"create": [], "activate": [], "end": [], "end-request": [], "requeue": [],
                                  "receiver": [], "backfill": [], "job": []}
    for goal_id in outbox.requeue_accepted(db, now):  # accepted goals whose create job is gone
        metrics.reconciled("create")
        done["create"].append(goal_id)
    for jid in durable.requeue_jobs(db, now):  # plugins' jobs (goalhub.enqueue_once) Redis lost
        metrics.reconciled("job")
        done["job"].append(jid)
    work: tuple[tuple[str, dict[str, Any], Any, dict[str, Any]], ...] = (
        ("activate", {**scheduled_before("activate", due), "active": False}, activate_goal, {}),
        ("end", scheduled_before("end", due), end_goal, {"reason": "expired"}),
        # An end asked for over the API (goalhub.api.goals) whose job was lost.
        ("end-request", {LIFECYCLE_PENDING: "end-request", "end_requested_at": {"$lte": due}}, end_goal, {"reason": "ended"}),
    )
    for action, query, function, kwargs in work:
        for goal in db.goals.find({**query, "ended_at": {"$exists": False}}, {"_id": 1, "_cls": 1}):
            goal_id = str(goal["_id"])
            jid = job_id(action, goal_id)
            if _pending(jid):
                continue
            stored = db.goals.find_one({"_id": ObjectId(goal_id)}, {"request_id": 1, tracing.FIELD: 1}) or {}
            request_id = stored.get("request_id")
            with tracing.span(f"reconcile {action}", {"goalhub.goal_id": goal_id}, kind="producer",
                              parent=stored.get(tracing.FIELD)):  # the job joins the goal's trace
                get_queue("lifecycle").enqueue_call(function, args=(goal_id,), kwargs=kwargs, job_id=jid,
                                                    meta=logs.job_meta({"reconciled": True} | (
                                                        {"request_id": request_id} if request_id else {})))
            metrics.reconciled(action)
            done[action].append(goal_id)
            log.warning("reconciler: %s of goal %s (%s) was overdue with no pending job; enqueued now",
                        action, goal_id, goal.get("_cls"), extra={"goal_id": goal_id, "action": action})
    for backfill_id in requeue_backfills(now):  # backfills whose next chunk Redis lost
        metrics.reconciled("backfill")
        done["backfill"].append(backfill_id)
    for outcome_key in requeue_unfinished(now):  # receiver retries whose job Redis lost
        metrics.reconciled("receiver")
        done["receiver"].append(outcome_key)
    for lost in requeue_lost_jobs():  # jobs a dying worker took off a queue
        metrics.reconciled("requeue")
        done["requeue"].append(lost)
    return done
