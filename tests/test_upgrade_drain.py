"""Issue 24 item 4, "queue jobs on version N, upgrade the code, and drain them on N+1", for real.

Version N is an earlier commit of this repository (``OLD``, the last release before
``create_goal`` jobs carried a goal id instead of the goal document, before backfills ran as
chunks, and before the ledger), extracted with ``git archive`` and run from the same venv with
``PYTHONPATH`` pointing at it. Its process creates goals and leaves, against the real embedded
Redis and store, every kind of job it makes in flight: ``create_goal`` jobs carrying whole goal
documents, receiver retries (scheduled by their backoff), an isolated receiver's job,
activations scheduled in rq-scheduler, an end request and an ADMIN backfill. It stops; the new
code's worker pool and scheduler start and drain it all, and a plugin upgraded with goalhub
(a receiver renamed) has its stranded retries re-targeted with ``goalhub retarget``.
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from rq.job import Job

from goalhub import backup, config, schema
from goalhub.connection import get_redis
from goalhub.dispatch import UNFINISHED
from goalhub.outbox import COLLECTION as ACCEPTED
from goalhub.queues import all_queues
from goalhub.replay import BACKFILLS
from goalhub.store import get_database

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
#: Version N: 1b61b61, the last commit before this turn's changes to jobs and the store.
OLD = "1b61b61"
PLUGIN = "upgrade_plugin"
LIFECYCLE = "goalhub.lifecycle.schedule_lifecycle_tasks"

# Version N's process: what goalhub N does when goals are created and its worker stops after
# running some of them (a deploy stops it), all through its own modules.
OLD_PROCESS = f"""
import json, time
from bson import ObjectId
from goalhub import replay, tasks
from goalhub.connection import get_redis
from goalhub.queues import all_queues, get_queue, job_id
from goalhub.store import get_database
from goalhub.worker import RecoveringSimpleWorker, prepare_worker

prepare_worker()
now = time.time()

def goal(nbf):
    return {{"_id": str(ObjectId()), "_cls": "UpgradeGoal", "active": False,
             "conditions": {{"session_id": str(ObjectId())}}, "levels": [{{"target": 10}}], "nbf": nbf,
             "exp": nbf + 3600, "context": {{"type": "upgrade"}}, "metadata": {{"user_id": str(ObjectId())}}}}

# Created on N: their receivers ran inline, steady and tally_v1 failed once (their retries wait
# out the backoff), apart's job is queued, their activations are scheduled at nbf.
first = [tasks.enqueue_create_goal(goal(now + 6)) for _ in range(4)]
RecoveringSimpleWorker(all_queues(), connection=get_redis()).work(burst=True, max_jobs=len(first),
                                                                   with_scheduler=False)
# An end request of N's API, queued.
get_queue("lifecycle").enqueue_call(tasks.end_goal, args=(first[0],), kwargs={{"reason": "ended"}},
                                    job_id=job_id("end-request", first[0]))
# Accepted on N, not created yet: create_goal jobs carrying the whole goal document.
second = [tasks.enqueue_create_goal(goal(now - 60 if i % 2 else now + 6)) for i in range(4)]
# An ADMIN backfill of N: one long job, its progress in Redis.
backfill = replay.start_backfill_job({{"target": "{PLUGIN}.steady", "event": "goal.created", "cls": None,
                                       "since": None, "until": None, "dry_run": False, "rate": None}})
# N records no schema version, and has no ledger.
db = get_database()
print("OLD-STATE " + json.dumps({{"first": first, "second": second, "backfill": backfill,
                                 "schema": db.goalhub_meta.find_one({{"_id": "schema"}}),
                                 "ledger": db.delivered.count_documents({{}})}}))
"""


def _old_tree(tmp_path: Path) -> Path:
    """Version N's goalhub package under ``tmp_path``, or a skip saying why it cannot be had."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", f"{OLD}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"commit {OLD} (goalhub N) is not in this clone (a shallow clone or an export has no "
                    "history): the upgrade test needs it")
    setup = configparser.ConfigParser()
    setup.read_string(subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:setup.cfg"], capture_output=True,
                                     text=True, check=True).stdout)
    unmet = []
    for line in setup["options"]["install_requires"].strip().splitlines():
        requirement = Requirement(line.strip())
        try:
            if metadata.version(requirement.name) not in requirement.specifier:
                unmet.append(f"{requirement} ({metadata.version(requirement.name)} installed)")
        except metadata.PackageNotFoundError:
            unmet.append(f"{requirement} (not installed)")
    if unmet:
        pytest.skip(f"this venv does not satisfy goalhub {OLD}'s requirements: {', '.join(unmet)}")
    tree = tmp_path / "goalhub-n"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD, "goalhub"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _env(python_path: list[Path], plugin_version: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join(map(str, python_path)), GOALHUB_PLUGINS=PLUGIN,
               UPGRADE_PLUGIN_VERSION=plugin_version, GOALHUB_BREAKER_THRESHOLD="0", GOALHUB_LIVE_INTERVAL="1")
    return env


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "goalhub", *command], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _wait_for(predicate, what: str, logs: list[Path], timeout: float = 90, seen: object = None) -> None:
    deadline = time.monotonic() + timeout  # a wait, not a limit: a loaded machine is slower
    while not predicate():
        if time.monotonic() > deadline:
            shown = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
            raise AssertionError(f"timed out waiting for {what}: {seen}\n{shown}")
        time.sleep(0.2)


def test_jobs_queued_on_version_n_drain_on_n_plus_1_each_goal_created_and_each_receiver_run_once(tmp_path):
    old = _old_tree(tmp_path)
    ran = subprocess.run([sys.executable, "-c", OLD_PROCESS], env=_env([old, TESTS], "1"), capture_output=True,
                         text=True, timeout=180, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    state = json.loads(next(line for line in ran.stdout.splitlines() if line.startswith("OLD-STATE "))[10:])
    first, second, goals = state["first"], state["second"], state["first"] + state["second"]
    assert state["schema"] is None and state["ledger"] == 0
    # What version N left: 4 goals stored, 4 only in create_goal jobs (no accepted record: N had
    # none), retries and an isolated job pending, activations scheduled. (This process runs
    # N+1: opening the store migrates it, as each N+1 process would.)
    db = get_database()
    assert sorted(str(g["_id"]) for g in db.goals.find()) == sorted(first)
    assert db[ACCEPTED].count_documents({}) == 0
    statuses = {(o["goal_id"], o["receiver"]): o["status"] for o in db.outcomes.find()}
    assert {statuses[(g, r)] for g in first for r in ("steady", "tally_v1")} == {"retrying"}
    assert {statuses[(g, "apart")] for g in first} == {"queued"}
    assert {statuses[(g, "schedule_lifecycle_tasks")] for g in first} == {"ok"}
    create_job = Job.fetch(f"create-{second[0]}", connection=get_redis())
    assert create_job.func_name == "goalhub.tasks.create_goal" and isinstance(create_job.args[0], dict)
    assert get_redis().exists(f"goalhub:backfill:{state['backfill']}")

    # Version N+1 (with the plugin's version 2): a worker pool and the scheduler.
    new_env = _env([TESTS], "2")
    logs = [tmp_path / "workers.log", tmp_path / "scheduler.log"]
    processes = [_start(["worker", "--pool", "2"], new_env, logs[0]), _start(["scheduler"], new_env, logs[1])]
    try:
        # The renamed receiver's retries fail on N+1, saying what to do.
        def stranded() -> bool:
            found = list(db.outcomes.find({"receiver": "tally_v1"}))
            return len(found) == 4 and all(o["status"] == "failed" for o in found)

        _wait_for(stranded, "tally_v1's retries to fail on N+1", logs)
        for outcome in db.outcomes.find({"receiver": "tally_v1"}):
            assert (f"receiver {PLUGIN}.tally_v1 is not installed on this worker" in outcome["error"]
                    and f"goalhub retarget {PLUGIN}.tally_v1 NEW_ID" in outcome["error"]), outcome["error"]
        moved = subprocess.run([sys.executable, "-m", "goalhub", "retarget", f"{PLUGIN}.tally_v1",
                                f"{PLUGIN}.tally_v2", "--json"], env=new_env, capture_output=True, text=True,
                               timeout=180)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert len(json.loads(moved.stdout)["retargeted"]) == 4

        seen: dict[str, object] = {}

        def drained() -> bool:
            outcomes = list(db.outcomes.find())
            seen.update(goals=db.goals.count_documents({}), outcomes=len(outcomes),
                        unsettled=sorted(f"{o['_id']} {o['status']}" for o in outcomes
                                         if o["status"] in UNFINISHED or o["status"] == "failed"),
                        active=db.goals.count_documents({"active": True}),
                        backfill=(db[BACKFILLS].find_one({"_id": state["backfill"]}) or {}).get("state"),
                        queues={q.name: (q.count, q.failed_job_registry.get_job_ids()) for q in all_queues()})
            # 4 receivers of goal.created a goal, tally_v2 beside N's tally_v1 for 4 of them, one goal.ended.
            return (seen["goals"] == 8 and seen["outcomes"] == 8 * 4 + 4 + 1 and not seen["unsettled"]
                    and seen["active"] == 7 and seen["backfill"] == "finished"
                    and all(count == 0 and not failed for count, failed in seen["queues"].values()))

        _wait_for(drained, "every job of version N to drain on N+1", logs, seen=seen)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)

    # Every goal created once, the N-era ones from their documents, none left accepted or creating.
    assert sorted(str(g["_id"]) for g in db.goals.find()) == sorted(goals)
    assert db[ACCEPTED].count_documents({}) == 0
    # Every receiver ran once per goal, whichever version ran it and however often it was retried.
    runs = {r["_id"]: r["n"] for r in db.upgrade_runs.find()}
    expected = {f"{name}:{g}": 1 for g in goals for name in ("steady", "apart", "tally")} | {f"ended:{first[0]}": 1}
    assert runs == expected
    by_goal: dict[str, dict[str, str]] = {}
    for o in db.outcomes.find():
        by_goal.setdefault(o["goal_id"], {})[f"{o['event']} {o['receiver']}"] = o["status"]
    for goal_id in goals:
        assert by_goal.pop(goal_id) == {
            "goal.created schedule_lifecycle_tasks": "ok", "goal.created steady": "ok", "goal.created apart": "ok",
            "goal.created tally_v2": "ok", **({"goal.created tally_v1": "retargeted"} if goal_id in first else {}),
            **({"goal.ended ended": "ok"} if goal_id == first[0] else {})}, goal_id
    assert by_goal == {}
    # Activations happened, none before nbf; the end request ended its goal (and cancelled its activation).
    for goal in db.goals.find():
        if str(goal["_id"]) == first[0]:
            assert goal["end_reason"] == "ended" and not goal["active"] and "activated_at" not in goal
        else:
            assert goal["active"] and goal["activated_at"] >= goal["nbf"], goal
    # N's backfill job ran as a chunked backfill under its id, its Redis progress gone.
    backfill = db[BACKFILLS].find_one({"_id": state["backfill"]})
    assert backfill["state"] == "finished" and backfill["delivered"] + backfill["already_done"] == backfill["seen"]
    assert not get_redis().exists(f"goalhub:backfill:{state['backfill']}")
    # The store was migrated from N (no schema version) to 1: what N finished is in the ledger.
    assert schema.stored_version(db) == schema.SCHEMA_VERSION
    for goal_id in first:
        assert f"goal.created|{LIFECYCLE}" in db.delivered.find_one({"_id": goal_id})["done"]
    for log in logs:
        assert "Traceback" not in log.read_text(errors="replace") or "LookupError" in log.read_text(), log

    # N made its store with an index on its entries' row ids, and N+1 ran on it as it was. With every
    # process stopped, the upgrade's last step drops it (README, Upgrading), and deletes stay whole.
    if not config.settings().MONGO_URI:  # the embedded store (not the suite on GOALHUB_TEST_STORE_URI)
        assert db.client.has_rid_index()
        assert backup.upgrade_store() == {"dropped": ["idx_rid"]} and not db.client.has_rid_index()
        entries = db.client._conn().execute("SELECT COUNT(*) FROM idx").fetchone()[0]
        outcome = db.outcomes.find_one({"status": "ok"})
        assert db.outcomes.delete_one({"_id": outcome["_id"]}).deleted_count == 1
        # Its goal_id, event_id, status and stored_at entries, and no other.
        assert entries - db.client._conn().execute("SELECT COUNT(*) FROM idx").fetchone()[0] == len(
            db.outcomes.index_information()) - 1
