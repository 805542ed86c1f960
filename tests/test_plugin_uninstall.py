"""Uninstalling any one plugin distribution removes its receivers and goal types; the rest
keep loading and a goal still goes through the dispatch to them.

For each plugin distribution in the tree: a private venv that is a copy of the project's
.venv (its dist-info directories, ``.pth`` files and editable finders copied, its packages
linked), ``pip uninstall -y`` of the distribution from that venv, then the plugins as a fresh
interpreter of that venv sees them. The shared .venv is never changed, so the test runs
beside the parallel suite.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from venv_copy import private_venv

ROOT = Path(__file__).resolve().parents[1]
KNOWN_PLUGIN_DIRS = [
    "goalhub_exclusive",
    "goalhub_show",
    "plugins/karaoke",
    "plugins/snapshot",
    "plugins/analytics",
    "plugins/livestream",
]
# Classes whose goals need nothing but a live session: the witnesses fired after an uninstall.
WITNESS_CLASSES = ["KaraokeGoal", "TriggerExclusiveGoal", "ShowFundingGoal", "TriggerPrivateGoal"]
CORE_PLUGINS = {"goalhub.lifecycle"}

# Run by a fresh interpreter: prints the plugins, receivers and goal types it loads, and
# with "fire" set, the outcomes of one goal of that class sent through the real dispatch.
PROBE = r"""
import json, sys, time
from bson import ObjectId
from rq import SimpleWorker
from goalhub import dispatch, plugins, receivers, tasks
from goalhub.connection import get_redis
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.queues import all_queues, get_scheduler
from goalhub.store import get_database

args = json.loads(sys.argv[1])
pm = plugins.get_plugin_manager()
report = {
    "plugins": {i.name: {"dist": i.dist, "error": i.error, "blocked": i.blocked} for i in plugins.plugin_infos()},
    "receivers": {
        f"{r.event}:{r.id}": {"plugin": r.plugin, "classes": sorted(r.classes) if r.classes else None, "excluded": sorted(r.excluded)}
        for event in EVENT_HOOKS for r in receivers.receivers(event)
    },
    "goal_types": sorted(
        f"{impl.plugin_name}:{t.name}" for impl in pm.hook.goal_types.get_hookimpls() for t in impl.function()
    ),
    "goal_classes": {impl.plugin_name: sorted(t.goal_class for t in impl.function())
                     for impl in pm.hook.goal_types.get_hookimpls()},
    "fired": {},
}
for cls in args.get("fire", []):
    db = get_database()
    session_id, streamer = ObjectId(), str(ObjectId())
    sid = str(session_id)
    db.sessions.insert_one({"_id": session_id, "user": streamer, "active": True, "sources": [],
                            "exclusive_goal_pairs": {}, "show_goal_pairs": []})
    conditions, context = {"session_id": sid}, {"type": cls, "session_id": sid}
    if "Exclusive" in cls:
        conditions["exclusive_to"] = context["exclusive_to"] = "viewer-1"
    goal = {"_id": str(ObjectId()), "_cls": cls, "active": True, "conditions": conditions, "levels": [{"target": 60}],
            "nbf": None, "exp": time.time() + 3600, "context": context, "metadata": {"user_id": streamer}}
    tasks.enqueue_create_goal(goal)
    for _ in range(20):
        get_scheduler().enqueue_jobs()
        SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="ERROR")
        if not any(queue.count for queue in all_queues()):
            break
    report["fired"][cls] = {
        "stored": db.goals.count_documents({"_id": ObjectId(goal["_id"])}),
        "outcomes": {f"{o['event']}:{o['plugin']}.{o['receiver']}": {"plugin": o["plugin"], "status": o["status"], "error": o.get("error")}
                     for o in db.outcomes.find({"goal_id": goal["_id"]})},
    }
print(json.dumps(report))
"""


def plugin_dirs() -> list[str]:
    found = list(KNOWN_PLUGIN_DIRS)
    found += sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "plugins").glob("*/setup.cfg"))
    return list(dict.fromkeys(found))


def read_setup_cfg(directory: Path) -> tuple[str, list[str]]:
    """The distribution name and its ``goalhub`` entry-point names."""
    parser = configparser.ConfigParser()
    parser.read(directory / "setup.cfg")
    lines = parser.get("options.entry_points", "goalhub", fallback="").splitlines()
    return parser["metadata"]["name"], [line.split("=")[0].strip() for line in lines if "=" in line]


def editable_dir(dist: str) -> Path | None:
    """Where ``dist`` is installed editable from, or None if it is not installed that way."""
    try:
        direct_url = metadata.distribution(dist).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    info = json.loads(direct_url or "{}")
    if not info.get("dir_info", {}).get("editable") or not info.get("url", "").startswith("file://"):
        return None
    return Path(info["url"][len("file://") :]).resolve()


def uninstall(python: Path, dist: str) -> subprocess.CompletedProcess:
    """``pip uninstall -y dist`` from the venv of ``python`` (pip's own ``--python``)."""
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python),
                           "uninstall", "-y", dist], capture_output=True, text=True, timeout=300)


def probe(tmp_path: Path, python: Path, fire: list[str] = ()) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOALHUB_LOAD_PLUGINS", "GOALHUB_DISABLED_PLUGINS", "GOALHUB_PLUGINS")}
    env.update(GOALHUB_HOME=str(tmp_path / "probe-home"), GOALHUB_RECEIVER_RETRIES="1", GOALHUB_RECEIVER_BACKOFF="0")
    result = subprocess.run(
        [str(python), "-c", PROBE, json.dumps({"fire": list(fire)})],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,  # not the checkout: imports come from what is installed
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def acts_on(receiver: dict, cls: str) -> bool:
    return (receiver["classes"] is None or cls in receiver["classes"]) and cls not in receiver["excluded"]


def witnesses(report: dict, removed: set[str]) -> list[str]:
    """Goal classes to fire after the uninstall: one the remaining plugins act on (preferably
    one the removed plugin did not), and the removed plugin's own, if it had a simple one."""
    created = [r for rid, r in report["receivers"].items() if rid.startswith("goal.created:")]
    others = [r for r in created if r["plugin"] not in removed | CORE_PLUGINS]
    own = [r for r in created if r["plugin"] in removed]
    remaining = [cls for cls in WITNESS_CLASSES if any(acts_on(r, cls) for r in others)]
    untouched = [cls for cls in remaining if not any(acts_on(r, cls) for r in own)]
    owned = [cls for cls in WITNESS_CLASSES if any(acts_on(r, cls) for r in own)]
    return list(dict.fromkeys((untouched or remaining)[:1] + owned[:1]))


@pytest.mark.slow
@pytest.mark.parametrize("plugin_dir", plugin_dirs())
def test_uninstalling_a_plugin_removes_its_receivers_and_goal_types_and_the_rest_keep_working(plugin_dir, tmp_path):
    directory = ROOT / plugin_dir
    if not (directory / "setup.cfg").exists():
        pytest.skip(f"{plugin_dir} is not in the tree")
    dist, entry_points = read_setup_cfg(directory)
    if editable_dir(dist) != directory.resolve():
        pytest.skip(f"{dist} is not installed editable from {plugin_dir}")
    removed = set(entry_points)

    python = private_venv(tmp_path)
    before = probe(tmp_path, python)
    assert removed <= set(before["plugins"]), f"{dist} is installed but its plugins {removed} do not load"
    own_receivers = {rid for rid, r in before["receivers"].items() if r["plugin"] in removed}
    own_types = {t for t in before["goal_types"] if t.split(":")[0] in removed}
    assert own_receivers or own_types, f"{dist} contributes neither receivers nor goal types"
    fire = witnesses(before, removed)

    uninstalled = uninstall(python, dist)
    assert uninstalled.returncode == 0 and f"Successfully uninstalled {dist}" in uninstalled.stdout, \
        uninstalled.stdout + uninstalled.stderr
    after = probe(tmp_path, python, fire=fire)

    # Its receivers and goal types are gone, and nothing else changed.
    assert removed.isdisjoint(after["plugins"])
    # The core's lifecycle receiver reads what it skips from the installed goal types: the
    # removed plugin's classes are no longer declared, so no longer excluded.
    own_classes = {cls for name in removed for cls in before["goal_classes"].get(name, [])}
    expected = {rid: r for rid, r in before["receivers"].items() if rid not in own_receivers}
    lifecycle = "goal.created:goalhub.lifecycle.schedule_lifecycle_tasks"
    expected[lifecycle] = {**expected[lifecycle],
                           "excluded": sorted(set(expected[lifecycle]["excluded"]) - own_classes)}
    assert expected == after["receivers"]
    assert sorted(set(before["goal_types"]) - own_types) == after["goal_types"]
    assert {n: p for n, p in before["plugins"].items() if n not in removed} == after["plugins"]
    assert all(p["error"] is None for p in after["plugins"].values()), after["plugins"]

    # Goals still go through the dispatch: every remaining receiver got its outcome, acted
    # where it should and succeeded; the removed plugin's receivers were never consulted.
    assert fire, "no goal class left that a remaining plugin acts on"
    for cls, fired in after["fired"].items():
        assert fired["stored"] == 1
        outcomes = fired["outcomes"]
        assert not any(o["plugin"] in removed for o in outcomes.values()), outcomes
        created = {rid: r for rid, r in after["receivers"].items() if rid.startswith("goal.created:")}
        assert {k for k in outcomes if k.startswith("goal.created:")} == set(created)
        for rid, receiver in created.items():
            assert outcomes[rid]["status"] == ("ok" if acts_on(receiver, cls) else "skipped"), (rid, outcomes[rid])
        assert all(o["status"] in ("ok", "skipped") for o in outcomes.values()), outcomes
        assert any(o["status"] == "ok" and o["plugin"] not in CORE_PLUGINS for o in outcomes.values()), outcomes

    # The project's venv never changed: the plugin is still installed there, editable.
    assert editable_dir(dist) == directory.resolve()
