"""Goal lifecycle tasks (goalhub.tasks, goalhub.lifecycle): create, activate at ``nbf`` and
end at ``exp`` through rq-scheduler, ending once (48 concurrent ends over the API included).

Real embedded Redis and real RQ (SimpleWorker in-process).
"""

from __future__ import annotations

import threading
import time

from bson import ObjectId
from world import bearer, goal_document, session, stored_goal

from goalhub import tasks
from goalhub.api import create_app
from goalhub.queues import get_queue, get_scheduler


def test_activate_goal_follows_seed_000(db):
    inactive = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() - 1)
    active = goal_document("ExclusiveGoal", active=True, nbf=time.time() - 1)
    for goal in (inactive, active):
        db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    assert tasks.activate_goal(inactive["_id"]) is True
    assert tasks.activate_goal(inactive["_id"]) is False
    # "BUT ExclusiveGoal is already active, nothing to update, returned"
    assert tasks.activate_goal(active["_id"]) is False
    assert db.goals.find_one({"_id": ObjectId(inactive["_id"])})["active"] is True


def test_activate_goal_never_runs_before_nbf(db):
    nbf = time.time() + 0.6
    goal = goal_document("TriggerPrivateGoal", active=False, nbf=nbf)
    db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    assert tasks.activate_goal(goal["_id"]) is True  # arrives early, waits
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert stored["activated_at"] >= nbf


def test_an_ended_goal_is_not_activated(db):
    goal = goal_document("TriggerPrivateGoal", active=False, nbf=time.time() - 1)
    db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    tasks.end_goal(goal["_id"])
    assert tasks.activate_goal(goal["_id"]) is False


def test_lifecycle_schedules_activation_at_nbf_and_end_at_exp_through_rq_scheduler(db, drain):
    nbf = time.time() + 1.5
    exp = nbf + 1.5
    goal = goal_document("TriggerExclusiveGoal", active=False, nbf=nbf, exp=exp)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    scheduled = {job.id for job in get_scheduler().get_jobs()}
    assert scheduled == {f"activate-{goal['_id']}", f"end-{goal['_id']}"}
    assert db.goals.find_one({"_id": ObjectId(goal["_id"])})["active"] is False

    deadline = time.time() + 15
    while time.time() < deadline and not db.goals.find_one({"_id": ObjectId(goal["_id"]), "ended_at": {"$exists": True}}):
        drain()
        time.sleep(0.05)
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert nbf <= stored["activated_at"] < exp
    assert stored["ended_at"] >= exp and stored["end_reason"] == "expired" and stored["active"] is False


def test_ending_a_goal_first_cancels_its_activation(db, drain):
    goal = goal_document("ShowFundingGoal", active=False, nbf=time.time() + 30)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    assert len(list(get_scheduler().get_jobs())) == 1
    tasks.end_goal(goal["_id"])
    assert list(get_scheduler().get_jobs()) == []


def test_past_nbf_activates_at_once(db, drain):
    goal = goal_document("TriggerPrivateGoal", active=False, nbf=time.time() - 5)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    assert db.goals.find_one({"_id": ObjectId(goal["_id"])})["active"] is True


def test_48_concurrent_ends_give_one_202_and_one_end_job(db):
    sid = session(db)
    gid = stored_goal(db, sid)
    get_queue("lifecycle").empty()
    app = create_app()
    headers = bearer()
    statuses: list[int] = []
    barrier = threading.Barrier(48)

    def end() -> None:
        with app.test_client() as own:
            barrier.wait()
            statuses.append(own.post(f"/goals/{gid}/end", headers=headers).status_code)

    threads = [threading.Thread(target=end) for _ in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] + [409] * 47
    assert get_queue("lifecycle").count == 1

