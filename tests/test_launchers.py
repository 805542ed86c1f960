"""The launchers ``deploy/`` and the ``Procfile`` ship start real goalhub commands: each
``ExecStart``, Procfile line and the Dockerfile's ``CMD`` parses with goalhub's own CLI (its
options and their bounds), and ``goalhub.target`` wants units that exist. A flag renamed in the
CLI, or a unit renamed, fails here rather than on an operator's machine."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

from goalhub.cli import main

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"


def parse(argv: list[str]) -> click.Context:
    """Parse ``goalhub <command> [options]`` as the CLI would, without running it."""
    assert Path(argv[0]).name == "goalhub", argv
    name, *rest = argv[1:]
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"no goalhub command {name!r}"
    return command.make_context(name, rest)


def template(unit: str) -> str:
    """The unit file an instance comes from: ``goalhub-pool@2.service`` -> ``goalhub-pool@.service``."""
    return re.sub(r"@[^.]+\.service$", "@.service", unit)


def unit_commands() -> list[tuple[str, list[str]]]:
    found = []
    for unit in sorted(SYSTEMD.glob("*.service")):
        [line] = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
        # The specifiers systemd fills in: a template's instance (%i: for goalhub-pool@, the
        # number of workers) and the host name (%H).
        line = line.removeprefix("ExecStart=").replace("%i", "2").replace("%H", "host")
        found.append((unit.name, shlex.split(line)))
    return found


def procfile_commands() -> list[tuple[str, list[str]]]:
    found = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, command = line.split(":", 1)
            # The shell's ${VAR:-default}, as honcho and Heroku run it, with its default.
            command = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", command)
            found.append((kind, shlex.split(command)))
    return found


@pytest.mark.parametrize("argv", [pytest.param(argv, id=unit) for unit, argv in unit_commands()])
def test_every_units_execstart_is_a_goalhub_command_its_cli_accepts(argv):
    parse(argv)


@pytest.mark.parametrize("argv", [pytest.param(argv, id=kind) for kind, argv in procfile_commands()])
def test_every_procfile_line_is_a_goalhub_command_its_cli_accepts(argv):
    parse(argv)


def test_the_dockerfiles_command_is_one_the_cli_accepts():
    [line] = [x for x in (ROOT / "deploy" / "Dockerfile").read_text().splitlines() if x.startswith("CMD ")]
    parse(json.loads(line.removeprefix("CMD ")))


def test_workers_are_started_as_a_pool_by_the_unit_the_target_wants_and_by_the_procfile():
    """The pool is how goalhub runs workers (issue 25): the target's worker unit and the
    Procfile's worker line run ``goalhub worker --pool N``."""
    target = (SYSTEMD / "goalhub.target").read_text()
    [wants] = [x.removeprefix("Wants=").split() for x in target.splitlines() if x.startswith("Wants=")]
    for name in wants:
        assert (SYSTEMD / template(name)).is_file(), f"goalhub.target wants {name}, which deploy/systemd/ lacks"
    units = dict(unit_commands())
    workers = [name for name in wants if units[template(name)][1] == "worker"]
    assert workers == ["goalhub-pool@2.service"]
    assert parse(units["goalhub-pool@.service"]).params["pool"] == 2
    [worker] = [argv for kind, argv in procfile_commands() if kind == "worker"]
    assert parse(worker).params["pool"] == 2


def test_a_flag_the_cli_does_not_have_is_refused():
    with pytest.raises(click.UsageError):
        parse(["goalhub", "worker", "--pool", "2", "--no-such-flag"])
    with pytest.raises(click.BadParameter):
        parse(["goalhub", "worker", "--pool", "0"])
