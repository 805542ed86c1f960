"""The README's example plugin, installed as a package and found through its entry point.

It is installed with pip into a directory of its own (not into the project's venv), and
a fresh interpreter with that directory on its path lists it and runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "goalhub-welcome"

RUN = """
import json, time
from bson import ObjectId
from goalhub import dispatch, receivers, tasks
from goalhub.store import get_database
from rq import SimpleWorker
from goalhub.connection import get_redis
from goalhub.queues import all_queues

db = get_database()
session_id = str(db.sessions.insert_one({"user": "u", "active": True}).inserted_id)
results = {}
for cls in ("KaraokeGoal", "ShowGoal"):
    goal_id = str(ObjectId())
    goal = {"_id": goal_id, "_cls": cls, "active": True, "conditions": {"session_id": session_id},
            "levels": [{"target": 30}], "nbf": None, "exp": None, "context": {"type": "x"},
            "metadata": {"user_id": "u"}}
    tasks.create_goal(goal)
    tasks.create_goal(goal)  # delivered twice
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True)
    outcome = db.outcomes.find_one({"goal_id": goal_id, "receiver": "welcome_karaoke_goal"})
    results[cls] = {"status": outcome["status"], "messages": db.chat.count_documents({"_id": f"welcome:{goal_id}"})}
print(json.dumps({"plugins": [r.id for r in receivers.receivers("goal.created")], "results": results}))
"""


def test_the_readme_example_plugin_installs_and_runs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "GOALHUB_LOAD_PLUGINS": "welcome"}
    listed = subprocess.run(
        [sys.executable, "-m", "goalhub", "plugins", "--json"], env=env, check=True, capture_output=True, text=True
    )
    welcome = next(p for p in json.loads(listed.stdout) if p["name"] == "welcome")
    assert welcome["dist"] == "goalhub-welcome" and welcome["version"] == "0.1.0"

    ran = subprocess.run([sys.executable, "-c", RUN], env=env, check=True, capture_output=True, text=True)
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert "welcome.welcome_karaoke_goal" in report["plugins"]
    assert report["results"] == {
        "KaraokeGoal": {"status": "ok", "messages": 1},
        "ShowGoal": {"status": "skipped", "messages": 0},
    }
