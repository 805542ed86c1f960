"""The core names no plugin: its code (docstrings, comments and help texts too) holds none of
the bundled plugins' goal classes, session fields or packages; what the core needs to know
of a class (its lifecycle, its session fields, a sample) comes from the plugins' goal types;
with no plugin loaded, the API serves, a session has no plugin field and `goalhub hooks`
lists the core's lifecycle receiver alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from world import GOAL_CLASSES, BundledGoalTypes

from goalhub import plugins, receivers
from goalhub.api import create_app
from goalhub.auth import mint_token

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "goalhub"
# What the bundled plugins own: their goal classes, session fields, context fields, packages.
PLUGIN_WORDS = (
    *GOAL_CLASSES,
    "exclusive_goal_pairs", "show_goal_pairs", "karaoke_goal", "trigger_private_goal",
    "funding_goal_id", "show_goal_id", "exclusive_to", "trigger_exclusive_goal_id",
    "goalhub_exclusive", "goalhub_show", "goalhub_karaoke", "goalhub_snapshot", "goalhub_analytics",
    "goalhub_livestream",
)


def test_no_plugin_class_field_or_package_appears_in_the_core_package():
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, PLUGIN_WORDS)) + r")\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(CORE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], "the core names a plugin (name a made-up class such as ConfettiGoal):\n" + "\n".join(found)


def test_the_lifecycle_and_session_fields_come_from_the_bundled_plugins(use_plugins):
    use_plugins("exclusive", "show", "karaoke")
    lifecycle = next(r for r in receivers.receivers("goal.created") if r.plugin == "goalhub.lifecycle")
    # As before goal types declared it: every class but these two is scheduled.
    assert sorted(lifecycle.excluded) == ["KaraokeGoal", "ShowGoal"]
    assert {cls for cls in GOAL_CLASSES if lifecycle.acts_on(cls)} == {
        "ExclusiveGoal", "TriggerExclusiveGoal", "ShowFundingGoal", "TriggerPrivateGoal"}
    assert plugins.session_fields() == {"exclusive_goal_pairs": {}, "show_goal_pairs": []}
    # The tests' inline plugin (world.BundledGoalTypes) declares exactly what the loaded plugins do.
    declared = {t.name: (t.goal_class, t.activate_at_nbf, t.end_at_exp) for t in plugins.goal_types().values()}
    assert declared == {
        t.name: (t.goal_class, t.activate_at_nbf, t.end_at_exp) for t in BundledGoalTypes().goal_types()
    }
    assert all(t.sample is not None for t in plugins.goal_types().values())


def test_a_new_goal_type_declares_its_lifecycle_without_touching_the_core(inline_plugin, db, drain):
    import goalhub

    class Confetti:
        @goalhub.hookimpl
        def goal_types(self):
            return [goalhub.GoalType("confetti", "ConfettiGoal", prepare=lambda request: None,
                                     activate_at_nbf=False, end_at_exp=False,
                                     session_fields={"confetti_goal": None})]

    inline_plugin(Confetti(), "confetti")
    lifecycle = next(r for r in receivers.receivers("goal.created") if r.plugin == "goalhub.lifecycle")
    assert not lifecycle.acts_on("ConfettiGoal") and lifecycle.acts_on("SparklerGoal")
    assert plugins.session_fields() == {"confetti_goal": None}


def test_with_no_plugin_loaded_the_api_serves_and_a_session_has_no_plugin_field():
    # goalhub_env: GOALHUB_LOAD_PLUGINS is empty.
    client = create_app().test_client()
    assert client.get("/readyz").get_json()["status"] == "ready"
    token = mint_token("6b0ea1adde0541e4c8f5e023", ["CREATOR"])
    response = client.post("/sessions", json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    assert set(response.get_json()) == {"_id", "user", "active", "sources", "started_at"}
    refused = client.post("/goals?type=exclusive", json={}, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 400 and "installed: none" in refused.get_json()["error"]["message"]


def test_with_no_plugin_loaded_goalhub_hooks_lists_only_the_lifecycle_receiver(tmp_path):
    env = {**os.environ, "GOALHUB_LOAD_PLUGINS": "", "GOALHUB_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "goalhub", "hooks", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    hooks = {entry["hook"]: entry["receivers"] for entry in json.loads(result.stdout)}
    assert [f"{r['plugin']}.{r['name']}" for r in hooks["goal_created"]] == [
        "goalhub.lifecycle.schedule_lifecycle_tasks"]
    assert hooks["goal_created"][0]["acts_on"] == "all"
    assert hooks["goal_added"] == hooks["goal_ended"] == hooks["goal_types"] == []
    assert result.stderr == ""
