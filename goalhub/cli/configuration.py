"""``goalhub config``: the effective configuration, secrets masked."""

from __future__ import annotations

import click

from goalhub import config
from goalhub.cli.output import echo_json, table


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_command(as_json: bool) -> None:
    """Print every GOALHUB_* setting's effective value (secrets masked); a bad value is one line and exit 1."""
    values = config.effective()
    if as_json:
        echo_json(values)
        return
    table(["variable", "value"], [[name, "(unset)" if value is None else value] for name, value in values.items()])
