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




def started_by_a_killed_worker(job_id: str, worker_name: str):
    """A job that a worker took and started, then the worker killed (``kill -9``): its
    registration gone, the job ``started`` in the registry under its name. Returns (job, worker)."""
    from rq import Worker

    queue = get_queue()
    job = queue.enqueue(time.sleep, 0, job_id=job_id)
    dead = Worker([queue], connection=queue.connection, name=worker_name)
    taken, _ = Queue.dequeue_any([queue], None, connection=queue.connection)
    dead.prepare_execution(taken)
    dead.prepare_job_execution(taken)  # started, as a worker that runs it
    queue.connection.delete(dead.key)  # kill -9: its registration is gone
    return job, dead


def test_the_pool_keeps_recovering_a_dead_workers_job_while_another_process_holds_the_lock(db, monkeypatch):
    """A pool worker killed mid-job: the parent's recovery meets the queue's recovery lock held by
    another process (a new worker's maintenance, or one killed holding it). It does not give up
    after its first tries: the job is recovered at a later check, once the lock is free."""
    from goalhub import pool as pools

    monkeypatch.setattr(pools.time, "sleep", lambda _: None)  # the retries within one check
    queue = get_queue()
    job, dead = started_by_a_killed_worker("held-by-a-killed-pool-worker", "killed-pool-worker")
    assert recovery.held_by({dead.name}, [queue]) == [job.id]

    parent = pools.Pool.__new__(pools.Pool)  # the parent's recovery alone, no processes
    parent._dead = {dead.name: time.monotonic()}
    lock = f"goalhub:recover-abandoned:{queue.name}"
    queue.connection.set(lock, "another-process", ex=30)
    assert parent.recover() == [] and parent._recover_pending  # not given up: tried at the next check
    queue.connection.delete(lock)
    assert parent.recover() == [job.id] and not parent._recover_pending
    assert recovery.held_by({dead.name}, [queue]) == [] and job.id not in queue.started_job_registry


def test_the_pool_leaves_a_job_it_cannot_recover_to_the_net_after_its_patience(db, monkeypatch, caplog):
    from goalhub import pool as pools

    monkeypatch.setattr(pools.time, "sleep", lambda _: None)
    queue = get_queue()
    _, dead = started_by_a_killed_worker("held-past-patience", "killed-long-ago")
    parent = pools.Pool.__new__(pools.Pool)
    parent._dead = {dead.name: time.monotonic() - pools.RECOVER_PATIENCE - 1}
    queue.connection.set(f"goalhub:recover-abandoned:{queue.name}", "another-process", ex=30)
    assert parent.recover() == [] and not parent._recover_pending
    assert "still not recovered" in caplog.text and "held-past-patience" in caplog.text


def test_the_pool_recovers_the_job_of_a_worker_killed_after_redis_lost_its_registration(db, monkeypatch):
    """Found by the chaos soak: a FLUSHALL while a pool worker ran a job, then the worker's next
    heartbeat wrote back a registration with only ``last_heartbeat`` (no pid, no host), then it was
    killed. Nobody can tell from that registration that it died, so its job waited ~35 s for the
    outbox relay. The parent, which reaped it, names it dead: the job is recovered at once."""
    from goalhub import pool as pools
    from goalhub.recovery import recover_abandoned_jobs

    monkeypatch.setattr(pools.time, "sleep", lambda _: None)
    queue = get_queue()
    job, dead = started_by_a_killed_worker("held-across-a-flush", "flushed-then-killed")  # Redis lost its registration ...
    dead.heartbeat()  # ... and its next beat wrote back a part of it
    assert queue.connection.hkeys(dead.key) == [b"last_heartbeat"]
    assert recover_abandoned_jobs([queue]) == []  # alive or dead: nobody can tell from that

    parent = pools.Pool.__new__(pools.Pool)
    parent._dead = {dead.name: time.monotonic()}
    assert parent.recover() == [job.id] and not parent._recover_pending
    assert job.id not in queue.started_job_registry


def test_a_job_that_ended_while_the_registry_was_read_is_not_called_recovered(db, monkeypatch, caplog):
    """Seen in the soak's log: a job that a live worker finished between the registry's listing
    and the look-up of its execution record (deleted as it ended) was reported 'recovered'."""
    from goalhub.recovery import recover_abandoned_jobs

    queue = get_queue()
    ended = [("create-ended-meanwhile", "execution-deleted-as-it-ended")]  # the listing, read just before
    monkeypatch.setattr(type(queue.started_job_registry), "get_job_and_execution_ids",
                        lambda self, cleanup=True: ended)
    assert recover_abandoned_jobs([queue]) == []
    assert "recovered jobs" not in caplog.text
