"""`goalhub new-plugin`: the whole path of a new plugin author. Generate the distribution,
`pip install` it (into a directory of its own: the project's venv is left alone), run its
own tests with pytest (goalhub's fixtures come from the opt-in pytest11 plugin), see its
receiver in `goalhub hooks` and run it with `goalhub fire`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from goalhub.cli import main
from goalhub.connection import stop_embedded_redis

pytestmark = pytest.mark.slow


def test_a_generated_plugin_installs_passes_its_own_tests_and_runs(tmp_path: Path):
    result = CliRunner().invoke(main, ["new-plugin", "confetti-cannon", "--goal-type", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "goalhub-confetti-cannon"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "goalhub_confetti_cannon/__init__.py", "goalhub_confetti_cannon/py.typed",
        "tests/test_confetti_cannon.py"}

    # Its code imports nothing of goalhub but the public package.
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert {name for name in imported if name.startswith("goalhub")} <= {"goalhub"}, (path, imported)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(root)],
                   check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALHUB_")}
    env.update(PYTHONPATH=str(site), GOALHUB_HOME=str(tmp_path / "home"))

    # Its own tests, as the author runs them: pytest in the plugin's directory.
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "3 passed" in tests.stdout  # its receiver on its class, not on others; its goal type

    def goalhub(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "goalhub", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    try:
        checked = goalhub("plugins", "--check", "--json")
        assert checked.returncode == 0, checked.stderr
        listed = {p["name"]: p for p in json.loads(checked.stdout)}
        assert listed["confetti_cannon"]["dist"] == "goalhub-confetti-cannon"

        hooks = goalhub("hooks", "--cls", "ConfettiCannonGoal", "--json")
        assert hooks.returncode == 0, hooks.stderr
        created = next(e for e in json.loads(hooks.stdout) if e["hook"] == "goal_created")
        # Its receiver acts on its class (beside the installed plugins' receivers of every class).
        acting = [f"{r['plugin']}.{r['name']}" for r in created["receivers"]]
        assert "confetti_cannon.on_goal_created" in acting
        assert "goalhub.lifecycle.schedule_lifecycle_tasks" not in acting  # its declared lifecycle

        fired = goalhub("fire", "goal.created", "--cls", "ConfettiCannonGoal", "--plugin", "confetti_cannon", "--json")
        assert fired.returncode == 0, fired.stderr
        outcomes = json.loads(fired.stdout)["outcomes"]
        assert [(o["receiver"], o["status"]) for o in outcomes] == [("on_goal_created", "ok")]
    finally:  # the CLI started the home's embedded Redis as a daemon: it would outlive the test
        stop_embedded_redis(tmp_path / "home")


def test_a_receiver_only_plugin_for_another_plugins_class_passes_its_tests_on_that_plugins_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GOALHUB_LOAD_PLUGINS", "karaoke")  # the installed plugin owning KaraokeGoal
    result = CliRunner().invoke(main, ["new-plugin", "karaoke-tally", "--cls", "KaraokeGoal",
                                       "--events", "goal.created,goal.ended", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "goalhub-karaoke-tally"
    module = (root / "goalhub_karaoke_tally" / "__init__.py").read_text()
    assert "goal_types" not in module and "GoalType" not in module  # receiver-only
    assert '@goalhub.receiver("goal.ended", "KaraokeGoal")' in module
    assert 'use_plugins("karaoke_tally", "karaoke")' in (root / "tests" / "test_karaoke_tally.py").read_text()
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(root)],
                   check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALHUB_")}
    env.update(PYTHONPATH=str(site), GOALHUB_HOME=str(tmp_path / "home"))
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "4 passed" in tests.stdout  # each event's receiver: on KaraokeGoal, and not on other classes
    # A typo'd class is refused, with the class it meant.
    typo = CliRunner().invoke(main, ["new-plugin", "tally2", "--cls", "KaraokeGaol", "--dir", str(tmp_path)])
    assert typo.exit_code == 1 and "did you mean KaraokeGoal?" in typo.stderr
    assert CliRunner().invoke(main, ["new-plugin", "tally3", "--dir", str(tmp_path)]).exit_code == 1


def test_new_plugin_refuses_a_bad_name_and_a_non_empty_directory(tmp_path: Path):
    bad = CliRunner().invoke(main, ["new-plugin", "9lives", "--dir", str(tmp_path)])
    assert bad.exit_code == 1 and "plugin name '9lives'" in bad.stderr
    assert CliRunner().invoke(main, ["new-plugin", "confetti", "--goal-type", "--dir", str(tmp_path)]).exit_code == 0
    again = CliRunner().invoke(main, ["new-plugin", "confetti", "--goal-type", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "exists and is not empty" in again.stderr


def test_goalhub_testing_is_opt_in_nothing_runs_in_a_project_that_has_goalhub_installed(tmp_path: Path):
    (tmp_path / "test_other.py").write_text(
        "import os, sys\n"
        "def test_untouched(request):\n"
        "    assert 'GOALHUB_LOAD_PLUGINS' not in os.environ and 'GOALHUB_HOME' not in os.environ\n"
        "    assert 'goalhub_env' not in request.fixturenames and 'redis_url' not in request.fixturenames\n"
        "def test_fixtures_are_there_when_asked(goalhub_env):\n"
        "    assert os.environ['GOALHUB_LOAD_PLUGINS'] == ''\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALHUB_")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_other.py"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout
