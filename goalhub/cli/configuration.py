"""``goalhub config``: the effective configuration, secrets masked; its ``--help`` lists every
setting, made from ``goalhub.config.Settings`` (the one description of each)."""

from __future__ import annotations

import textwrap

import click

from goalhub import config
from goalhub.cli.output import echo_json, table


def settings_help() -> str:
    """Every setting, its default and what it does, as ``goalhub config --help`` prints them."""
    lines = ["\b", "Settings (environment variables):"]
    for row in config.reference():
        lines.append(f"  {row['variable']}  [default: {row['default'] or '(empty)'}]")
        lines += textwrap.wrap(row["meaning"].replace("`", ""), 88, initial_indent="      ",
                               subsequent_indent="      ")
    return "\n".join(lines)


@click.command("config", epilog=settings_help())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_command(as_json: bool) -> None:
    """Print every GOALHUB_* setting's effective value (secrets masked); a bad value is one line and exit 1."""
    values = config.effective()
    if as_json:
        echo_json(values)
        return
    table(["variable", "value"], [[name, "(unset)" if value is None else value] for name, value in values.items()])
