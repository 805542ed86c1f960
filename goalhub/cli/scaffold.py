"""``goalhub new-plugin NAME``: a plugin distribution that installs with pip and whose own
tests pass out of the box (the start of the README's plugin walkthrough).

It writes ``goalhub-<name>/``: ``pyproject.toml`` with the ``goalhub`` entry point, the
package with one receiver and (unless ``--no-goal-type``) one goal type declaring its
lifecycle and a sample, a README, and tests that use goalhub's opt-in pytest fixtures. The
generated code imports only ``goalhub``.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import click

from goalhub.errors import BadRequest

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def names(name: str) -> dict[str, str]:
    """The names a plugin called ``name`` goes by: entry point, distribution, package, class."""
    plugin = name.strip().lower().replace("-", "_")
    if plugin.startswith("goalhub_"):
        plugin = plugin[len("goalhub_"):]
    if not NAME.fullmatch(plugin) or keyword.iskeyword(plugin):
        raise BadRequest(f"plugin name {name!r}: use 1 to 40 lowercase letters, digits, '_' or '-', starting with a letter")
    words = [w for w in plugin.split("_") if w]
    return {
        "plugin": plugin,
        "dist": "goalhub-" + plugin.replace("_", "-"),
        "package": f"goalhub_{plugin}",
        "goal_class": "".join(w.capitalize() for w in words) + "Goal",
        "goal_type": plugin,
        "receiver": f"record_{plugin}_goal",
        "collection": f"{plugin}_goals",
    }


PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "goalhub plugin: {plugin}"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["goalhub"]

[project.optional-dependencies]
test = ["pytest"]

# goalhub finds the plugin through this entry point: name = module.
[project.entry-points.goalhub]
{plugin} = "{package}"

[tool.setuptools]
packages = ["{package}"]
"""

MODULE_HEAD = '''\
"""goalhub plugin {plugin}: its receivers{and_types}.

Installed, goalhub finds it through the ``goalhub`` entry point in pyproject.toml.
A receiver runs inline in the job that sent its event (as a job of its own when declared
``isolated=True``), is retried alone when it raises and never runs again after it
succeeded: keep its effects idempotent (``$set``, upserts on deterministic ids).
"""

from __future__ import annotations

from typing import Any

import goalhub


@goalhub.receiver("goal.created", "{goal_class}")
def {receiver}(goal_id: str, _cls: str, conditions: dict[str, Any]) -> dict[str, Any] | None:
    """Records every new {goal_class} (replace this with what your plugin does)."""
    if _cls != "{goal_class}":
        return None
    goalhub.get_database().{collection}.update_one(
        {{"_id": goal_id}}, {{"$set": {{"session_id": conditions.get("session_id")}}}}, upsert=True
    )
    return {{"recorded": goal_id}}
'''

MODULE_GOAL_TYPE = '''

def prepare_{goal_type}(request: goalhub.CreateRequest) -> goalhub.GoalDraft:
    """``POST /goals?type={goal_type}`` with ``{{levels, context: {{session_id}}}}``: validate the
    body (raise goalhub's errors to refuse it) and return the goal to store. Only read here."""
    body = request.body if isinstance(request.body, dict) else {{}}
    context = body.get("context") if isinstance(body.get("context"), dict) else {{}}
    session_id = context.get("session_id")
    if not isinstance(session_id, str):
        raise goalhub.BadRequest("context.session_id is required", field="context.session_id")
    return goalhub.GoalDraft(
        cls="{goal_class}",
        active=True,
        conditions={{"session_id": session_id}},
        levels=body.get("levels") or [{{"target": 1}}],
        nbf=None,
        exp=None,
        context={{"type": "{goal_type}", "session_id": session_id}},
        metadata={{"user_id": request.user_id}},
    )


def sample_{goal_type}(request: goalhub.SampleRequest) -> goalhub.GoalDraft:
    """A realistic {goal_class} for ``goalhub fire`` and the ``fire`` test fixture."""
    return goalhub.GoalDraft(
        cls="{goal_class}",
        active=True,
        conditions={{"session_id": request.session_id}},
        levels=[{{"target": 1}}],
        nbf=None,
        exp=None,
        context={{"type": "{goal_type}", "session_id": request.session_id}},
        metadata={{"user_id": request.user_id}},
    )


@goalhub.hookimpl
def goal_types() -> list[goalhub.GoalType]:
    return [
        goalhub.GoalType(
            name="{goal_type}",
            goal_class="{goal_class}",
            prepare=prepare_{goal_type},
            description="a {goal_type} goal, active from creation",
            # The core schedules activate_goal at nbf / end_goal at exp only if asked.
            activate_at_nbf=False,
            end_at_exp=False,
            sample=sample_{goal_type},
        )
    ]
'''

TESTS = '''\
"""{plugin}'s receivers through goalhub's real dispatch (goalhub's pytest fixtures: an
isolated home, the embedded Redis and store, real RQ jobs)."""

import pytest


@pytest.fixture(autouse=True)
def _{plugin}_loaded(use_plugins):
    use_plugins("{plugin}")  # the installed plugin, found through its entry point


def test_the_receiver_records_a_{goal_type}_goal(fire, db):
    outcomes = fire("goal.created", "{goal_class}")
    outcome = outcomes["{plugin}.{receiver}"]
    assert outcome["status"] == "ok", outcome.get("error")
    assert db.{collection}.count_documents({{"_id": outcome["goal_id"]}}) == 1


def test_the_receiver_skips_other_classes(fire, db):
    outcomes = fire("goal.created", "SomeOtherGoal")
    assert outcomes["{plugin}.{receiver}"]["status"] == "skipped"
    assert db.{collection}.count_documents({{}}) == 0
'''

TESTS_GOAL_TYPE = '''

def test_its_goal_type_asks_the_core_for_no_lifecycle_task(fire):
    outcomes = fire("goal.created", "{goal_class}")
    assert outcomes["goalhub.lifecycle.schedule_lifecycle_tasks"]["status"] == "skipped"
'''

README = """\
# {dist}

A goalhub plugin, generated by `goalhub new-plugin {plugin}`.

    pip install -e '.[test]'
    pytest                                        # its tests, on goalhub's fixtures
    goalhub plugins --check                       # loaded, nothing broken
    goalhub hooks --cls {goal_class}               # its receiver, in call order
    goalhub fire goal.created --cls {goal_class}   # a real test fire; --plugin {plugin} for it alone

- `{package}/__init__.py`: the receiver `{receiver}` of `goal.created` for
  `{goal_class}`{type_line}.
- `tests/`: goalhub's pytest fixtures (`goalhub_env`, `use_plugins`, `fire`, `db`, `drain`)
  come with goalhub; none runs unless a test asks for it.
"""


def write_plugin(name: str, directory: Path, goal_type: bool = True) -> Path:
    """Write the distribution of plugin ``name`` under ``directory``; returns its root."""
    n = names(name)
    root = directory / n["dist"]
    if root.exists() and any(root.iterdir()):
        raise BadRequest(f"{root} exists and is not empty")
    package = root / n["package"]
    (root / "tests").mkdir(parents=True, exist_ok=True)
    package.mkdir(parents=True, exist_ok=True)
    module = MODULE_HEAD.format(**n, and_types=" and goal type" if goal_type else "")
    if goal_type:
        module += MODULE_GOAL_TYPE.format(**n)
    tests = TESTS.format(**n) + (TESTS_GOAL_TYPE.format(**n) if goal_type else "")
    type_line = f"; the goal type `{n['goal_type']}` (`POST /goals?type={n['goal_type']}`)" if goal_type else ""
    files = {
        root / "pyproject.toml": PYPROJECT.format(**n),
        root / "README.md": README.format(**n, type_line=type_line),
        package / "__init__.py": module,
        package / "py.typed": "",
        root / "tests" / f"test_{n['plugin']}.py": tests,
    }
    for path, text in files.items():
        path.write_text(text)
    return root


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the distribution.")
@click.option("--goal-type/--no-goal-type", default=True, show_default=True,
              help="Also a goal type (POST /goals?type=NAME) with its lifecycle and a sample.")
def new_plugin(name: str, directory: Path, goal_type: bool) -> None:
    """Write a plugin distribution (entry point, one receiver, a goal type, README, tests)."""
    root = write_plugin(name, directory, goal_type)
    n = names(name)
    click.echo(f"wrote {root}")
    click.echo(f"  next: pip install -e '{root}[test]' && (cd {root} && pytest) && goalhub hooks --cls {n['goal_class']}")
