"""rq-scheduler to the sub-second (goalhub.queues.Scheduler): a lifecycle job keeps its exact time
and is moved to the lifecycle queue once that time has come, never in the second before it
(rq-scheduler alone truncates to whole seconds and moved jobs up to a second early)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from bson import ObjectId

from goalhub import queues, tasks
from goalhub.queues import get_queue, get_scheduler, job_id


def test_a_scheduled_activation_keeps_its_sub_second_time_and_is_not_moved_early(monkeypatch):
    goal_id = str(ObjectId())
    at = math.floor(time.time()) + 5.6  # a fractional second, well ahead
    tasks.schedule("activate", goal_id, at)
    scheduler = get_scheduler()
    assert scheduler.connection.zscore(scheduler.scheduled_jobs_key, job_id("activate", goal_id)) == at

    lifecycle = get_queue("lifecycle")
    monkeypatch.setattr(queues, "time", SimpleNamespace(time=lambda: at - 0.3))  # same whole second, before at
    scheduler.enqueue_jobs()
    assert lifecycle.count == 0

    monkeypatch.setattr(queues, "time", SimpleNamespace(time=lambda: at + 0.01))
    scheduler.enqueue_jobs()
    assert lifecycle.job_ids == [job_id("activate", goal_id)]


def test_one_shot_moves_from_separate_schedulers_each_move_due_retries():
    """``enqueue_jobs`` outside ``run`` (the test drain, ``goalhub fire`` without a worker)
    must not keep RQ's scheduler locks, or the next one-shot move could not take them."""
    queue = get_queue()
    get_scheduler().enqueue_jobs()
    # A retry parked in RQ's scheduled registry, its backoff already over.
    queue.enqueue_at(datetime.now(UTC) - timedelta(seconds=1), print, "retry", job_id="parked-retry")
    assert queue.count == 0
    get_scheduler().enqueue_jobs()
    assert queue.job_ids == ["parked-retry"]
