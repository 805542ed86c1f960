"""Broken plugins are left out and reported by name and reason; every other plugin loads
and runs. The matrix is real pip packages with a ``goalhub`` entry point, installed once for
the session (``pip install --target`` a directory of their own, so the project's venv and
the other tests never see them), and goalhub runs as fresh processes that read the entry
points: the CLI, the API app, a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GOOD_TYPES = '''
import goalhub

def _prepare(request):
    raise goalhub.BadRequest("not in this test")

def _sample(request):
    return goalhub.GoalDraft(cls="{cls}", active=True, conditions={{"session_id": request.session_id}},
                             levels=[{{"target": 1}}], nbf=None, exp=None,
                             context={{"type": "confetti", "session_id": request.session_id}},
                             metadata={{"user_id": request.user_id}})

@goalhub.hookimpl
def goal_types():
    return [goalhub.GoalType("confetti", "{cls}", prepare=_prepare, sample=_sample,
                             activate_at_nbf=False, end_at_exp=False)]
'''

PLUGINS = {
    # name: module source
    "bp_import": "raise ImportError('No module named feedkit')\n",
    "bp_typo": textwrap.dedent('''
        import goalhub

        @goalhub.hookimpl
        def goal_craeted(goal_id):
            return goal_id
        '''),
    "bp_badarg": textwrap.dedent('''
        import goalhub

        @goalhub.receiver("goal.created")
        def wants_colour(goal_id, colour):
            return colour
        '''),
    "bp_types_raise": textwrap.dedent('''
        import goalhub

        @goalhub.hookimpl
        def goal_types():
            raise RuntimeError("no types today")
        '''),
    "bp_types_wrong": textwrap.dedent('''
        import goalhub

        @goalhub.hookimpl
        def goal_types():
            return [{"name": "sparkler", "goal_class": "SparklerGoal"}]
        '''),
    "bp_clash_a": GOOD_TYPES.format(cls="ConfettiGoal"),
    "bp_clash_b": GOOD_TYPES.format(cls="SparklerGoal"),
    "bp_good": textwrap.dedent('''
        import goalhub

        @goalhub.receiver("goal.created", "ConfettiGoal")
        def celebrate(goal_id, _cls):
            return {"celebrated": goal_id}

        @goalhub.receiver("goal.created", "ConfettiGaol")
        def misspelt(goal_id):
            return goal_id
        '''),
}
BROKEN = {"bp_import", "bp_typo", "bp_badarg", "bp_types_raise", "bp_types_wrong"}


def _distribution(root: Path, name: str, source: str) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / f"{name}.py").write_text(source)
    (directory / "setup.cfg").write_text(textwrap.dedent(f"""\
        [metadata]
        name = goalhub-{name.replace("_", "-")}
        version = 0.0.1

        [options]
        py_modules = {name}

        [options.entry_points]
        goalhub =
            {name} = {name}
        """))
    (directory / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    return directory


@pytest.fixture(scope="session")
def matrix_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("broken-plugins")
    sources = [_distribution(root, name, source) for name, source in PLUGINS.items()]
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(site), *map(str, sources)],
        check=True, capture_output=True, timeout=300,
    )
    return site


@pytest.fixture
def env(matrix_site: Path, tmp_path: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k != "GOALHUB_STRICT_PLUGINS"}
    return {**environment, "PYTHONPATH": str(matrix_site), "GOALHUB_HOME": str(tmp_path / "home"),
            "GOALHUB_LOAD_PLUGINS": ",".join(PLUGINS)}


def goalhub(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "goalhub", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=env["GOALHUB_HOME"].rsplit("/", 1)[0])


def test_each_broken_plugin_is_reported_by_name_and_reason_and_the_others_load(env):
    result = goalhub(env, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert set(listed) == set(PLUGINS)
    errors = {name: entry["error"] for name, entry in listed.items()}
    assert errors["bp_import"] == "ImportError: No module named feedkit"
    assert errors["bp_typo"] == "unknown hook 'goal_craeted'; did you mean goal_created?"
    assert "colour" in errors["bp_badarg"] and "goal_created" in errors["bp_badarg"]
    assert errors["bp_types_raise"] == "goal_types hook raised RuntimeError: no types today"
    assert "not a goalhub.GoalType" in errors["bp_types_wrong"] and "dict" in errors["bp_types_wrong"]
    # A broken plugin is not half-loaded: no hook of it is left behind.
    assert all(listed[name]["hooks"] == [] for name in BROKEN)
    # Two plugins claiming one goal type name: both reported, the first by name keeps it.
    assert errors["bp_clash_a"] is errors["bp_clash_b"] is errors["bp_good"] is None
    assert listed["bp_clash_a"]["problems"] == [
        "goal type 'confetti' is also claimed by bp_clash_b; it keeps it (first by plugin name)"]
    assert listed["bp_clash_b"]["problems"] == [
        "goal type 'confetti' is also claimed by bp_clash_a; bp_clash_a keeps it (first by plugin name)"]
    # The good plugin runs, warned about the class no goal type creates.
    assert {r["name"] for r in listed["bp_good"]["receivers"]} == {"celebrate", "misspelt"}
    assert listed["bp_good"]["warnings"] == [
        "bp_good.misspelt names goal class 'ConfettiGaol', which no installed goal type creates; "
        "did you mean ConfettiGoal?"]

    human = goalhub(env, "plugins")
    assert human.returncode == 0
    assert "failed to load: unknown hook 'goal_craeted'; did you mean goal_created?" in human.stdout
    assert "warning: bp_good.misspelt names goal class 'ConfettiGaol'" in human.stdout


def test_check_and_strict_mode_turn_a_broken_plugin_into_a_non_zero_exit(env):
    checked = goalhub(env, "plugins", "--check")
    assert checked.returncode == 1
    for name in BROKEN | {"bp_clash_a", "bp_clash_b"}:
        assert f"broken plugin {name}: " in checked.stderr
    assert goalhub({**env, "GOALHUB_STRICT_PLUGINS": "1"}, "plugins").returncode == 1
    # Strict mode stops every process at start: the API, a worker, `goalhub up`.
    strict = {**env, "GOALHUB_STRICT_PLUGINS": "1"}
    api = subprocess.run([sys.executable, "-c", "from goalhub.api import create_app; create_app()"],
                         env=strict, capture_output=True, text=True, timeout=60)
    assert api.returncode != 0 and "PluginsBroken" in api.stderr and "bp_typo" in api.stderr
    for kind in (["--fork"], ["--pool", "2"]):  # the pool's parent reports it before it forks, as a worker does
        worker = goalhub(strict, "worker", "--burst", *kind)
        assert worker.returncode == 1 and "Error: broken plugins (GOALHUB_STRICT_PLUGINS)" in worker.stderr, kind
    up = goalhub(strict, "up", "--port", "9")
    assert up.returncode == 1
    assert "plugin problem(s); GOALHUB_STRICT_PLUGINS is set, nothing starts" in up.stderr
    assert "bp_import (NOT LOADED): ImportError: No module named feedkit" in up.stderr
    # With the broken plugins blocked, a receiver declared for a class no installed goal type
    # creates (bp_good.misspelt: every ConfettiGoal would be skipped for it) still fails --check.
    typo = goalhub({**env, "GOALHUB_LOAD_PLUGINS": "bp_clash_a,bp_good"}, "plugins", "--check")
    assert typo.returncode == 1
    assert ("broken plugin bp_good: bp_good.misspelt names goal class 'ConfettiGaol', which no installed "
            "goal type creates; did you mean ConfettiGoal?") in typo.stderr
    assert goalhub({**env, "GOALHUB_LOAD_PLUGINS": "bp_clash_a"}, "plugins", "--check").returncode == 0


def test_the_api_is_ready_but_degraded_and_each_process_logs_each_broken_plugin_once(env):
    probe = textwrap.dedent("""
        import json
        from goalhub.api import create_app
        from goalhub.auth import mint_token
        client = create_app().test_client()
        for _ in range(2):
            response = client.get("/readyz")
        admin = client.get("/readyz", headers={"Authorization": "Bearer " + mint_token("6800a9073e0c346531958b03", ["ADMIN"])})
        print(json.dumps({"status": response.status_code, "body": response.get_json(), "admin": admin.get_json()}))
        """)
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ready = json.loads(result.stdout.strip().splitlines()[-1])
    assert ready["status"] == 200 and ready["body"]["status"] == "degraded"
    # Anyone gets the plugins' names; the reasons (paths, hosts) only with an ADMIN token.
    named = BROKEN | {"bp_clash_a", "bp_clash_b", "bp_good"}  # bp_good: its ConfettiGaol receiver
    assert set(ready["body"]["plugins"]) == named
    assert "problems" not in ready["body"] and "feedkit" not in json.dumps(ready["body"])
    reasons = {(p["plugin"], p["reason"]) for p in ready["admin"]["problems"]}
    assert ("bp_import", "failed to load: ImportError: No module named feedkit") in reasons
    assert {plugin for plugin, _ in reasons} == named
    for name in BROKEN:
        assert result.stderr.count(f"goalhub plugin {name} is broken") == 1, result.stderr


def test_the_other_plugins_run_hooks_warn_and_fire_gives_pure_json(env):
    hooks = goalhub(env, "hooks", "--json")
    assert hooks.returncode == 0, hooks.stderr
    created = next(e for e in json.loads(hooks.stdout) if e["hook"] == "goal_created")
    assert {f"{r['plugin']}.{r['name']}" for r in created["receivers"]} == {
        "bp_good.celebrate", "bp_good.misspelt", "goalhub.lifecycle.schedule_lifecycle_tasks"}
    assert "warning: bp_good.misspelt names goal class 'ConfettiGaol'" in hooks.stderr

    fired = goalhub(env, "fire", "goal.created", "--cls", "ConfettiGoal", "--json")
    assert fired.returncode == 0, fired.stderr
    report = json.loads(fired.stdout)  # nothing but the JSON document on stdout
    statuses = {f"{o['plugin']}.{o['receiver']}": o["status"] for o in report["outcomes"]}
    assert statuses == {"bp_good.celebrate": "ok", "bp_good.misspelt": "skipped",
                        "goalhub.lifecycle.schedule_lifecycle_tasks": "skipped"}
    assert report["test_fire"] is True
