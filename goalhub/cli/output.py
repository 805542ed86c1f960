"""Output for the ``goalhub`` command: aligned tables, JSON, colours only on a terminal."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from bson import ObjectId

from goalhub import dispatch, receivers, slowness
from goalhub.plugins import plugin_info

STATUS_COLOURS = {
    "ok": "green",
    "failed": "red",
    "retrying": "yellow",
    "timed out": "yellow",
    "skipped": "bright_black",
    "queued": "cyan",
    "paused": "magenta",
    "retargeted": "blue",
    "dropped": "bright_black",
}


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    return repr(value)


def table(headers: list[str], rows: list[list[Any]], styles: dict[int, Any] | None = None) -> None:
    """An aligned table; ``styles`` maps a column to a function ``cell -> click.style kwargs``."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    widths[-1] = 0  # the last column is not padded

    def line(row: list[str], style: Any) -> str:
        return "  ".join(
            style(i, cell, cell.ljust(width)) for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )

    click.echo(line(headers, lambda i, cell, text: click.style(text, bold=True) if cell else text).rstrip())
    for row in cells:
        click.echo(
            line(
                row,
                lambda i, cell, text: (
                    click.style(text, **styles[i](cell)) if styles and i in styles and cell else text
                ),
            ).rstrip()
        )


def status_style(status: str) -> dict[str, Any]:
    return {"fg": STATUS_COLOURS.get(status.split()[0] if status else "", None)}


def acts_on(receiver: receivers.Receiver) -> str:
    """The goal classes a receiver acts on, as people read them."""
    if receiver.classes is None:
        return f"all but {', '.join(sorted(receiver.excluded))}" if receiver.excluded else "all"
    return ", ".join(sorted(receiver.classes - receiver.excluded))


def receiver_dict(receiver: receivers.Receiver) -> dict[str, Any]:
    info = plugin_info(receiver.plugin)
    return {
        "name": receiver.name,
        "plugin": receiver.plugin,
        "dist": info.dist,
        "version": info.version,
        "classes": sorted(receiver.classes) if receiver.classes is not None else None,
        "excluded": sorted(receiver.excluded),
        "acts_on": acts_on(receiver),
        "settings": receiver.settings(),
        "slow": slowness.isolated().get(receiver.id),  # isolated after overrunning its budget
    }


def ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} ms"


def clock(value: float | None) -> str:
    return "" if value is None else time.strftime("%H:%M:%S", time.localtime(value))


def print_outcomes(outcomes: list[dict[str, Any]], since: float | None = None) -> None:
    rows = []
    for o in sorted(outcomes, key=lambda o: (o["event"], dispatch.recorded_at(o))):
        status = o["status"]
        if since is not None and status == "ok" and (o.get("finished_at") or since) < since:
            status = "ok (earlier)"
        rows.append(
            [
                status,
                o["event"],
                f"{o['plugin']}.{o['receiver']}",
                o.get("attempts", ""),
                ms(o.get("duration_ms")),
                o.get("error") or "",
            ]
        )
    table(
        ["STATUS", "EVENT", "RECEIVER", "TRIES", "DURATION", "ERROR"],
        rows,
        {0: status_style, 5: lambda _: {"fg": "red"}},
    )


def outcome_json(o: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in o.items() if k not in ("arguments", "traceback")} | {"id": o["_id"]}


def show_document(document: dict[str, Any]) -> None:
    width = max(len(key) for key in document)
    for key, value in document.items():
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (key in ("nbf", "exp") or key.endswith("_at"))
        ):
            shown = f"{value}  ({clock(value)})"
        elif isinstance(value, dict | list):
            shown = json.dumps(value, default=str, ensure_ascii=False)
        else:
            shown = str(value)
        click.echo(f"{click.style(key.ljust(width), bold=True)}  {shown}")
