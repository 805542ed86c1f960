"""``goalhub new-plugin NAME``: a plugin distribution that installs with pip and whose own
tests pass out of the box (the start of the README's plugin walkthrough).

It writes ``goalhub-<name>/``: ``pyproject.toml`` with the ``goalhub`` entry point, the
package with one receiver per event (``--events``) for one goal class (``--cls``), a README,
and tests that use goalhub's opt-in pytest fixtures. By default the plugin is receiver-only,
the common case: it reacts to the goals of a class another installed plugin's goal type
creates, and its tests fire that plugin's sample goal. ``--goal-type`` also writes a goal type
(its own class, its lifecycle and a sample). The generated code imports only ``goalhub``.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import click

from goalhub.cli.introspect import check_goal_class, goal_types_by_plugin
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
"""goalhub plugin {plugin}: its receivers of {events} for {goal_class} goals{and_types}.

Installed, goalhub finds it through the ``goalhub`` entry point in pyproject.toml.
A receiver runs inline in the job that sent its event (as a job of its own when declared
``isolated=True``), is retried alone when it raises and never runs again after it
succeeded: keep its effects idempotent (``$set``, upserts on deterministic ids).
What each event's receivers get, with types: docs/plugins.md, "Event payloads".
"""

from __future__ import annotations

from typing import Any

import goalhub
'''

RECEIVER = '''

@goalhub.receiver("{event}", "{goal_class}")
def {receiver}(goal_id: str, _cls: str, conditions: dict[str, Any]) -> dict[str, Any] | None:
    """Records each {event} of a {goal_class} (replace this with what your plugin does)."""
    if _cls != "{goal_class}":
        return None
    goalhub.get_database().{collection}.update_one(
        {{"_id": goal_id}}, {{"$set": {{"{flag}": True, "session_id": conditions.get("session_id")}}}}, upsert=True
    )
    return {{"recorded": goal_id}}
'''

PURGE = '''

@goalhub.hookimpl
def purge_test_fires(goal_ids: list[str]) -> int:
    """``goalhub outcomes --purge-test``: delete what this plugin wrote for test fires (a
    receiver knows it handles one by its ``test_fire`` argument)."""
    return goalhub.get_database().{collection}.delete_many({{"_id": {{"$in": goal_ids}}}}).deleted_count
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
    # The installed plugins (entry points): {loaded_why}.
    use_plugins({loaded})
'''

TEST_RECEIVER = '''

def test_{receiver}_records_a_{class_snake}(fire, db):
    outcomes = fire("{event}", "{goal_class}")
    outcome = outcomes["{plugin}.{receiver}"]
    assert outcome["status"] == "ok", outcome.get("error")
    assert db.{collection}.find_one({{"_id": outcome["goal_id"]}})["{flag}"] is True


def test_{receiver}_skips_other_classes(fire, db):
    outcomes = fire("{event}", "SomeOtherGoal")
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
    goalhub plugins --check                       # loaded, nothing broken, no class typo
    goalhub hooks --cls {goal_class}               # its receivers, in call order
    goalhub fire goal.created --cls {goal_class}   # a real test fire; --plugin {plugin} for it alone

- `{package}/__init__.py`: {receivers_line}{type_line}.
- `tests/`: goalhub's pytest fixtures (`goalhub_env`, `use_plugins`, `fire`, `db`, `drain`)
  come with goalhub; none runs unless a test asks for it.{owner_line}
- On a running goalhub: `pip install` it, then `goalhub reload`.
"""

EVENTS = ("goal.created", "goal.added", "goal.ended")


def write_plugin(name: str, directory: Path, goal_type: bool = False, goal_class: str | None = None,
                 events: tuple[str, ...] = ("goal.created",), owner: str | None = None) -> Path:
    """Write the distribution of plugin ``name`` under ``directory``; returns its root.
    Receiver-only unless ``goal_type``: then ``owner`` is the plugin whose goal type creates
    ``goal_class`` (its tests load it for its sample goal)."""
    n = names(name)
    if goal_class:
        n["goal_class"] = goal_class
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise BadRequest(f"--events: {', '.join(unknown) or 'none'}; each must be one of {', '.join(EVENTS)}")
    root = directory / n["dist"]
    if root.exists() and any(root.iterdir()):
        raise BadRequest(f"{root} exists and is not empty")
    package = root / n["package"]
    (root / "tests").mkdir(parents=True, exist_ok=True)
    package.mkdir(parents=True, exist_ok=True)
    class_snake = re.sub(r"(?<!^)(?=[A-Z])", "_", n["goal_class"]).lower()
    receivers = [{"event": e, "receiver": "on_" + e.replace(".", "_"), "flag": e.replace(".", "_"),
                  "class_snake": class_snake} for e in events]
    module = MODULE_HEAD.format(**n, events=", ".join(events), and_types=", and the goal type creating them"
                                if goal_type else "")
    module += "".join(RECEIVER.format(**n, **r) for r in receivers) + PURGE.format(**n)
    if goal_type:
        module += MODULE_GOAL_TYPE.format(**n)
    loaded = [n["plugin"]] + ([owner] if owner and not goal_type else [])
    loaded_why = (f"this one, and {owner}: its goal type creates {n['goal_class']} (fire's sample)"
                  if len(loaded) > 1 else "this one")
    tests = TESTS.format(**n, loaded=", ".join(f'"{p}"' for p in loaded), loaded_why=loaded_why)
    tests += "".join(TEST_RECEIVER.format(**n, **r) for r in receivers)
    tests += TESTS_GOAL_TYPE.format(**n) if goal_type else ""
    type_line = f"; the goal type `{n['goal_type']}` (`POST /goals?type={n['goal_type']}`)" if goal_type else ""
    receivers_line = ", ".join(f"the receiver `{r['receiver']}` of `{r['event']}`" for r in receivers) + \
        f" for `{n['goal_class']}`"
    owner_line = (f"\n- `{n['goal_class']}` goals come from the `{owner}` plugin's goal type: it must be installed "
                  "beside this one (its tests fire its sample goal).") if owner and not goal_type else ""
    files = {
        root / "pyproject.toml": PYPROJECT.format(**n),
        root / "README.md": README.format(**n, type_line=type_line, receivers_line=receivers_line,
                                          owner_line=owner_line),
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
@click.option("--cls", "goal_class", default=None,
              help="The goal class its receivers act on: one an installed goal type creates (required "
                   "without --goal-type; with it, default <Name>Goal).")
@click.option("--events", default="goal.created", show_default=True,
              help=f"Comma-separated events to receive: {', '.join(EVENTS)}.")
@click.option("--goal-type", is_flag=True, help="Also write a goal type (POST /goals?type=NAME) creating the class.")
def new_plugin(name: str, directory: Path, goal_class: str | None, events: str, goal_type: bool) -> None:
    """Write a plugin distribution: entry point, one receiver per event, README, tests.

    Receiver-only by default (react to the goals another plugin's goal type creates:
    --cls ConfettiGoal); --goal-type also writes a goal type of its own.
    """
    n = names(name)  # a bad name is the first thing said
    owner = None
    if not goal_type:
        if not goal_class:
            raise BadRequest("--cls CLASS: the goal class its receivers act on (or --goal-type for a class of its own)")
        check_goal_class(goal_class)
        owner = next(plugin for plugin, provided in goal_types_by_plugin().items() if isinstance(provided, list)
                     and any(t["goal_class"] == goal_class for t in provided))
    root = write_plugin(name, directory, goal_type, goal_class,
                        tuple(e.strip() for e in events.split(",") if e.strip()), owner)
    click.echo(f"wrote {root}")
    click.echo(f"  next: pip install -e '{root}[test]' && (cd {root} && pytest) && "
               f"goalhub hooks --cls {goal_class or n['goal_class']}")
