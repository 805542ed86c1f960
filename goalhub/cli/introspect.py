"""``goalhub plugins`` and ``goalhub hooks``: what is installed and which receivers act on what.

The known goal classes are those the installed goal types create. A receiver declared for
a class no installed goal type creates (a typo such as ``ConfettiGaol``) is warned about in
both listings; a broken plugin is listed with its reason. ``--check`` exits 1 for either.
``goalhub plugins`` also shows the live view (``goalhub.liveview``): what every running
process loaded, which are stale, which run other plugins than are installed now.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from goalhub import breaker, config, liveview, receivers
from goalhub.cli.output import acts_on, echo_json, receiver_dict
from goalhub.errors import BadRequest
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.plugins import (
    DEFAULT_PLUGINS,
    goal_classes,
    loaded_plugin_manager,
    plugin_info,
    plugin_infos,
    problems,
)


def goal_types_by_plugin() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for impl in loaded_plugin_manager().hook.goal_types.get_hookimpls():
        try:
            found[impl.plugin_name] = [
                {"name": t.name, "goal_class": t.goal_class, "description": t.description,
                 "activate_at_nbf": t.activate_at_nbf, "end_at_exp": t.end_at_exp,
                 "session_fields": sorted(t.session_fields), "sample": t.sample is not None}
                for t in impl.function() or []
            ]
        except Exception as exc:  # a broken hook is reported, not fatal to the listing
            found[impl.plugin_name] = {"error": f"{type(exc).__name__}: {exc}"}
    return found


def unknown_class_warnings() -> list[dict[str, Any]]:
    """Receivers declared for a goal class that no installed goal type creates."""
    return liveview.class_warnings()


def _echo_warnings(warnings: list[dict[str, Any]]) -> None:
    for warning in warnings:
        click.echo(click.style(f"warning: {warning['warning']}", fg="yellow"), err=True)


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also the core's built-in and blocked plugins.")
@click.option("--check", is_flag=True,
              help="Exit with status 1 if a plugin is broken or a receiver names an unknown goal class (CI).")
@click.option("--live/--no-live", default=None,
              help="Also the live view of every running process [default: on, off with --json; "
                   "--json --live prints {plugins, live}].")
@click.option("--json", "as_json", is_flag=True)
def plugins(show_all: bool, check: bool, live: bool | None, as_json: bool) -> None:
    """Installed plugins: distribution, version, hooks, receivers, goal types, load errors.

    A broken plugin (import error, unknown hook, wrong hook argument, bad goal type, a goal
    type name claimed twice) is listed with its reason; the others load and run. With
    --check or GOALHUB_STRICT_PLUGINS=1, a broken plugin makes the exit status 1; with
    --check, so does a receiver declared for a goal class no installed goal type creates,
    and with --check --live, anything that makes the live view degraded.

    Then the live view: every running API process, worker and scheduler, what it loaded,
    tripped breakers, stale processes, and processes that need `goalhub reload`.
    """
    pm = loaded_plugin_manager()
    goal_types = goal_types_by_plugin()
    installed = [r for event in EVENT_HOOKS for r in receivers.receivers(event)]
    tripped = breaker.tripped()
    warnings = unknown_class_warnings()
    listed = []
    for info in plugin_infos():
        if not show_all and (info.blocked or info.name in DEFAULT_PLUGINS):
            continue
        plugin = pm.get_plugin(info.name)
        listed.append(
            {
                "name": info.name,
                "module": info.module,
                "dist": info.dist,
                "version": info.version,
                "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or []) if plugin else [],
                "receivers": [
                    {"event": r.event, "name": r.name, "acts_on": acts_on(r), "tripped": tripped.get(r.id)}
                    for r in installed
                    if r.plugin == info.name
                ],
                "goal_types": goal_types.get(info.name, []),
                "blocked": info.blocked,
                "error": info.error,
                "problems": list(info.warnings),
                "warnings": [w["warning"] for w in warnings if w["plugin"] == info.name],
            }
        )
    broken = problems()
    live_asked = bool(live)
    live = not as_json if live is None else live
    view = liveview.health() if live else {}
    if as_json:
        echo_json({"plugins": listed, "live": view} if live else listed)
    elif not listed:
        click.echo("No plugins installed." + ("" if show_all else " (--all lists built-in and blocked ones)"))
    for entry in [] if as_json else listed:
        origin = f"{entry['dist']} {entry['version']}" if entry["dist"] else entry["module"]
        state = " [blocked]" if entry["blocked"] else ""
        click.echo(click.style(entry["name"], bold=True) + f"  ({origin}){state}")
        if entry["error"]:
            click.echo("  " + click.style(f"failed to load: {entry['error']}", fg="red"))
            continue
        for problem in entry["problems"]:
            click.echo("  " + click.style(f"problem: {problem}", fg="red"))
        for warning in entry["warnings"]:
            click.echo("  " + click.style(f"warning: {warning}", fg="yellow"))
        if entry["hooks"]:
            click.echo(f"  hooks: {', '.join(entry['hooks'])}")
        for r in entry["receivers"]:
            click.echo(f"  {r['event']:<13} {r['name']}  ({r['acts_on']})")
            if r["tripped"]:
                click.echo("    " + click.style(f"PAUSED (circuit breaker tripped after {r['tripped']['failures']} "
                                                f"failed events): {r['tripped']['last_error']}", fg="red"))
        types = entry["goal_types"]
        if isinstance(types, dict):
            click.echo("  " + click.style(f"goal_types failed: {types['error']}", fg="red"))
        elif types:
            named = ", ".join(f"{t['name']} ({t['goal_class']})" for t in types)
            click.echo(f"  goal types: {named}")
    if not as_json and live:
        click.echo()
        for line in liveview.summary(view):
            click.echo(click.style(line, fg="red" if view["status"] != "ready" else None))
    failing = broken + [{"plugin": w["plugin"], "reason": w["warning"]} for w in warnings if check]
    if check and live_asked:  # --check --live: the running processes' problems count too
        failing += [{"plugin": p["plugin"], "reason": p["reason"]} for p in view["problems"]]
        failing += [{"plugin": "-", "reason": f"process {pid} is stale"} for pid in view["stale"]]
        failing += [{"plugin": "-", "reason": f"process {pid} needs `goalhub reload`"} for pid in view["reload_needed"]]
    if failing and (check or config.settings().STRICT_PLUGINS):
        for problem in failing:
            click.echo(f"broken plugin {problem['plugin']}: {problem['reason']}", err=True)
        sys.exit(1)


def check_goal_class(name: str) -> str:
    """``name`` if an installed goal type creates that class; else one clear error."""
    known = set(goal_classes())
    if name not in known:
        raise BadRequest(
            f"unknown goal class {name!r}{liveview.did_you_mean(name, known)}; installed goal types create: "
            + (", ".join(sorted(known)) or "none (no plugin with goal types is loaded)")
        )
    return name


@click.command()
@click.option("--cls", "goal_class", default=None, help="Only the receivers that act on this goal class.")
@click.option("--json", "as_json", is_flag=True)
def hooks(goal_class: str | None, as_json: bool) -> None:
    """Every hook with its receivers in call order and the goal classes each acts on."""
    if goal_class:
        check_goal_class(goal_class)
    listed = []
    for event, hook in EVENT_HOOKS.items():
        found = [
            receiver_dict(r) for r in receivers.receivers(event) if not goal_class or r.acts_on(goal_class)
        ]
        listed.append({"hook": hook, "event": event, "receivers": found})
    types = []
    for plugin, provided in goal_types_by_plugin().items():
        info = plugin_info(plugin)
        entries = provided if isinstance(provided, list) else []
        if goal_class:
            entries = [t for t in entries if t["goal_class"] == goal_class]
        if entries or (not goal_class and not isinstance(provided, list)):
            types.append(
                {"plugin": plugin, "dist": info.dist, "version": info.version, "goal_types": provided}
            )
    listed.append({"hook": "goal_types", "event": None, "receivers": types})
    _echo_warnings(unknown_class_warnings())
    if as_json:
        echo_json(listed)
        return
    for entry in listed:
        title = entry["hook"] + (f"  (signal sender {entry['event']})" if entry["event"] else "")
        click.echo(click.style(title, bold=True))
        if not entry["receivers"]:
            click.echo("  (none)")
        for number, r in enumerate(entry["receivers"], 1):
            if entry["event"] is None:
                provided = r["goal_types"]
                what = (
                    ", ".join(f"{t['name']} -> {t['goal_class']}" for t in provided)
                    if isinstance(provided, list)
                    else provided
                )
                click.echo(f"  {r['plugin']}: {what}  [{r['dist'] or '-'} {r['version'] or ''}]".rstrip())
            else:
                origin = f"{r['dist'] or '-'} {r['version'] or ''}".rstrip()
                click.echo(f"  {number}. {r['plugin']}.{r['name']}  acts on: {r['acts_on']}  [{origin}]")
                s = r["settings"]
                click.echo(f"     {'DISABLED (GOALHUB_DISABLED_RECEIVERS), ' if s['disabled'] else ''}"
                           f"{'isolated job' if s['isolated'] else 'inline'}; "
                           + "; ".join(f"{k} {s[k]['value']} ({s[k]['from']})" for k in ("budget", "retries", "backoff")))
                if r["slow"]:
                    click.echo("     " + click.style(
                        f"SLOW: overran its budget ({r['slow']['overrun_s']} s "
                        f"> {r['slow']['budget_s']} s); runs as its own job until "
                        f"{time.strftime('%H:%M:%S', time.localtime(r['slow']['until']))} (`goalhub resume` ends it)",
                        fg="yellow"))
        click.echo()
