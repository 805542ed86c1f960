"""Recovering jobs a dead worker took (goalhub.recovery): a job taken off its queue by a worker
that died before or while running it is queued again, once.
"""

from __future__ import annotations

import time

from bson import ObjectId
from rq import Queue
from world import goal_document

from goalhub import recovery, scheduler, tasks
from goalhub.connection import get_redis
from goalhub.queues import get_queue


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_queued_again(db):
    from rq import Worker

    from goalhub.recovery import recover_abandoned_jobs

    queue = get_queue()
    job = queue.enqueue(time.sleep, 0, job_id="taken-then-orphaned")
    taker = Worker([queue], connection=queue.connection, name="died-before-forking")
    taken, _ = Queue.dequeue_any([queue], None, connection=queue.connection)
    assert taken.id == job.id and queue.count == 0
    taker.prepare_execution(taken)  # in the started registry; the horse never ran: still "queued"
    assert job.id in queue.started_job_registry and taken.get_status() == "queued"
    queue.connection.delete(taker.key)  # the worker died (kill -9): its registration is gone
    assert recover_abandoned_jobs([queue]) == [job.id]
    assert queue.get_job_ids() == [job.id] and job.id not in queue.started_job_registry


def test_a_job_a_dying_worker_took_off_its_queue_is_put_back_once(db, drain, monkeypatch):
    """RQ takes a job from several queues with BLPOP: a worker killed before it starts the job
    leaves it in no list and no registry. The reconciler puts it back, once, at the second look."""
    from goalhub.queues import enqueued_key, get_queue

    monkeypatch.setattr(recovery, "LOST_AFTER", 0.2)
    session, user = str(ObjectId()), str(ObjectId())
    waiting = goal_document("KaraokeGoal", metadata={"user_id": user}, conditions={"session_id": session})
    lost = goal_document("KaraokeGoal", metadata={"user_id": user}, conditions={"session_id": session})
    for goal in (lost, waiting):
        tasks.enqueue_create_goal(goal, fresh=True)
    connection = get_redis()
    taken = connection.lpop(get_queue().key).decode()  # the dying worker's BLPOP, and nothing after it
    assert taken == f"create-{lost['_id']}"
    time.sleep(0.3)
    assert recovery.requeue_lost_jobs() == []  # first sighting: a live worker may be about to start it
    time.sleep(0.3)
    assert scheduler.reconcile()["requeue"] == [taken]  # still in no list, no registry: put back
    assert recovery.requeue_lost_jobs() == []  # once
    assert get_queue().job_ids == [f"create-{waiting['_id']}", taken]  # the waiting one was left alone
    drain(scheduled=False)
    assert db.goals.count_documents({"_id": {"$in": [ObjectId(lost["_id"]), ObjectId(waiting["_id"])]}}) == 2
    time.sleep(0.3)
    assert recovery.requeue_lost_jobs() == [] and connection.zcard(enqueued_key()) == 0  # started: watched no more


