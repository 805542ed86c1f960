"""The scheduler process's idle poll (goalhub.scheduler.SchedulerProcess): one round trip asks
whether a job is due (goalhub.queues.Scheduler.due); the whole poll (rq-scheduler's heartbeat
and lock, RQ's registry locks, the moves, the beat and the reconciler) runs when one is, and at
least once a second."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from bson import ObjectId

from goalhub import liveness, queues, scheduler, tasks
from goalhub.queues import get_queue, get_scheduler, job_id


def test_due_sees_a_lifecycle_job_once_its_time_came_and_a_retry_whose_backoff_is_over(monkeypatch):
    one_shot = get_scheduler()
    assert not one_shot.due()
    goal_id = str(ObjectId())
    at = math.floor(time.time()) + 5.6
    tasks.schedule("activate", goal_id, at)
    with monkeypatch.context() as clock:
        clock.setattr(queues, "time", SimpleNamespace(time=lambda: at - 0.3))
        assert not one_shot.due()
        clock.setattr(queues, "time", SimpleNamespace(time=lambda: at + 0.01))
        assert one_shot.due()
        one_shot.enqueue_jobs()
        assert get_queue("lifecycle").job_ids == [job_id("activate", goal_id)] and not one_shot.due()

    # A receiver's retry parked in RQ's scheduled registry, its backoff over.
    get_queue().enqueue_at(datetime.now(UTC) - timedelta(seconds=1), print, "retry", job_id="parked-retry")
    assert one_shot.due()
    one_shot.enqueue_jobs()
    assert get_queue().job_ids == ["parked-retry"] and not one_shot.due()


class _Stop(Exception):
    pass


def test_an_idle_scheduler_polls_whole_once_a_second_and_at_once_when_a_job_comes_due(monkeypatch):
    process = scheduler.process(interval=0.05)
    monkeypatch.setattr(process, "_install_signal_handlers", lambda: None)  # not the main thread
    polls: list[tuple[float, bool]] = []  # (when, whether a due job started it)
    asked = {"due": 0, "last": False}
    stop = threading.Event()
    due, poll = process.due, process.poll

    def counted_due() -> bool:
        if stop.is_set():
            raise _Stop
        asked["due"] += 1
        asked["last"] = due()
        return asked["last"]

    def counted_poll() -> None:
        polls.append((time.time(), asked["last"]))
        asked["last"] = False
        poll()

    monkeypatch.setattr(process, "due", counted_due)
    monkeypatch.setattr(process, "poll", counted_poll)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            process.run()
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - shown by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.time()
    thread.start()
    try:
        time.sleep(1.5)
        idle = time.time() - started
        assert polls and not any(by_due for _, by_due in polls)
        assert len(polls) <= math.ceil(idle / liveness.BEAT_EVERY)  # whole polls: once a second
        assert asked["due"] >= 5  # and a cheap question every interval in between
        assert liveness.lock_holder()["holder"] == process.name  # a whole poll beats as before

        goal_id = str(ObjectId())
        at = polls[-1][0] + liveness.BEAT_EVERY / 2  # half way between two whole polls
        while at < time.time() + 0.1:
            at += liveness.BEAT_EVERY
        tasks.schedule("activate", goal_id, at)  # scheduled: due in the future
        assert get_queue("lifecycle").job_ids == []
        lifecycle = get_queue("lifecycle")
        deadline = time.time() + 5
        while lifecycle.job_ids != [job_id("activate", goal_id)] and time.time() < deadline:
            time.sleep(0.01)
        assert lifecycle.job_ids == [job_id("activate", goal_id)]
        assert any(by_due for _, by_due in polls)  # moved by a poll the due job started
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and not errors
    assert not process._running and not process.connection.exists(process.scheduler_lock_key)
