"""``goalhub backfill``, ``resume``, ``breakers``, ``retarget`` and ``drop``: past events for a new
receiver, receivers paused by their circuit breaker (``goalhub.replay``, ``goalhub.breaker``),
and the pending work of a receiver an upgrade renamed or removed (``goalhub.retarget``)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from goalhub import replay, retarget
from goalhub.cli.events import wait_for_outcome_ids
from goalhub.cli.output import clock, echo_json, print_outcomes, table
from goalhub.hookspecs import EVENT_HOOKS


def _bar(progress: replay.Progress) -> str:
    width = 30
    done = progress.seen / progress.total if progress.total else 1.0
    rate = progress.rate()
    eta = (progress.total - progress.seen) / rate if rate > 0 else 0.0
    filled = int(width * done)
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.seen}/{progress.total} "
            f"{rate:6.1f} ev/s  ETA {eta:5.0f}s  delivered {progress.delivered}  "
            f"already done {progress.already_done}")


@click.command()
@click.argument("target")
@click.option("--event", "event", type=click.Choice(list(EVENT_HOOKS)), default="goal.created", show_default=True)
@click.option("--cls", "goal_class", default=None, help="Only goals of this class (_cls).")
@click.option("--since", default=None, help="From this time: epoch seconds, ISO 8601, or an age (12h, 7d).")
@click.option("--until", default=None, help="Before this time (same forms).")
@click.option("--dry-run", is_flag=True, help="Count what would be delivered; deliver nothing.")
@click.option("--rate", type=click.FloatRange(min=0.01), default=None, help="At most N events a second.")
@click.option("--no-wait", is_flag=True, help="Return once delivered, without waiting for the outcomes.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the outcomes.")
@click.option("--redeliver-skipped", is_flag=True,
              help="Also deliver, once, events recorded `skipped` for TARGET that it acts on now (a fixed class typo).")
@click.option("--json", "as_json", is_flag=True)
def backfill(target: str, event: str, goal_class: str | None, since: str | None, until: str | None,
             dry_run: bool, rate: float | None, no_wait: bool, timeout: float, redeliver_skipped: bool,
             as_json: bool) -> None:
    """Deliver past EVENTs to TARGET only (`plugin` or `plugin.receiver`), once each.

    Already-delivered (event, receiver) pairs are skipped, so running it again, or after
    Ctrl-C, resumes. Jobs go to the backfill queue, which workers take after live work.
    --redeliver-skipped repairs a class typo: an event TARGET was recorded `skipped` for,
    because it did not act on the class then, is delivered once if it acts on it now."""
    since_at, until_at = replay.parse_when(since, "--since"), replay.parse_when(until, "--until")
    show = sys.stderr.isatty() and not as_json

    def on_progress(progress: replay.Progress) -> None:
        if show:
            click.echo(_bar(progress), nl=False, err=True)

    # Ctrl-C stops between two events (the one in hand is recorded and enqueued whole); a
    # second Ctrl-C stops at once.
    stop = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        progress = replay.backfill(target, event, goal_class=goal_class, since=since_at, until=until_at,
                                   dry_run=dry_run, rate=rate, redeliver_skipped=redeliver_skipped,
                                   on_progress=on_progress, stop=stop)
    except KeyboardInterrupt:
        progress = None
    finally:
        signal.signal(signal.SIGINT, previous)
    if progress is None or progress.stopped:
        click.echo("\ninterrupted: run the same command again to resume (done events are skipped)", err=True)
        sys.exit(130)
    if show:
        click.echo(err=True)
    summary: dict[str, Any] = progress.summary()
    summary["failed"] = 0
    if not dry_run and not no_wait and progress.outcomes:
        found, finished = wait_for_outcome_ids(progress.outcomes, timeout)
        summary["failed"] = sum(1 for o in found if o["status"] in ("failed", "paused"))
        summary["finished"] = finished
        if not as_json and summary["failed"]:
            print_outcomes([o for o in found if o["status"] in ("failed", "paused")])
    if as_json:
        echo_json(summary)
    else:
        verb = "would deliver" if dry_run else "delivered"
        click.echo(f"{event} -> {target}: {summary['total']} events; {verb} {summary['delivered']}, "
                   f"skipped {summary['already_done']} already done, {summary['not_acting']} not acted on, "
                   + (f"redelivered {summary['redelivered_skipped']} skipped before, " if redeliver_skipped else "") +
                   f"{summary['failed']} failed  ({summary['rate']} ev/s)")
    if summary["failed"] or summary.get("finished") is False:
        sys.exit(1)


@click.command()
@click.argument("target")
@click.option("--no-wait", is_flag=True, help="Return once redelivered, without waiting for the outcomes.")
@click.option("--timeout", default=120.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def resume(target: str, no_wait: bool, timeout: float, as_json: bool) -> None:
    """Close TARGET's circuit breaker and deliver every event it missed (paused or failed), once."""
    result = replay.resume(target)
    ids = result["redelivered"]
    found: list[dict[str, Any]] = []
    if ids and not no_wait:
        found, result["finished"] = wait_for_outcome_ids(ids, timeout)
    result["failed"] = sum(1 for o in found if o["status"] in ("failed", "paused"))
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{target}: closed {', '.join(result['closed']) or 'nothing (no breaker was tripped)'}; "
                   f"redelivered {len(ids)} outcome(s)")
        if found:
            print_outcomes(found)
    if result["failed"]:
        sys.exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True)
def breakers(as_json: bool) -> None:
    """Receivers paused by their circuit breaker, with when and why."""
    states = [s for s in replay.receiver_states() if s["tripped"]]
    if as_json:
        echo_json(states)
        return
    if not states:
        click.echo("No receiver is paused.")
        return
    table(["RECEIVER", "TRIPPED", "FAILURES", "LAST ERROR"],
          [[s["id"], clock(s["tripped"]["tripped_at"]), s["tripped"]["failures"], s["tripped"]["last_error"]]
           for s in states], {0: lambda _: {"fg": "red"}})
    click.echo("\n`goalhub resume RECEIVER` closes one and delivers what it missed.")


def _batches(call: Callable[[], dict[str, Any]], dry_run: bool) -> dict[str, Any]:
    """``call`` (a retarget or a drop, one batch a call) until nothing more is pending, its
    results added up; once for a dry run (it takes nothing, so the next call finds the same)."""
    total: dict[str, Any] = {}
    while True:
        result = call()
        for name, value in result.items():
            if isinstance(value, list | int) and not isinstance(value, bool):
                total[name] = total.get(name, type(value)()) + value
            else:
                total[name] = value
        if dry_run or not result["more"]:
            return total


@click.command("retarget")
@click.argument("old")
@click.argument("new")
@click.option("--dry-run", is_flag=True, help="List the pending outcomes that would move; change nothing.")
@click.option("--no-wait", is_flag=True, help="Return once moved, without waiting for the new outcomes.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the new outcomes.")
@click.option("--json", "as_json", is_flag=True)
def retarget_command(old: str, new: str, dry_run: bool, no_wait: bool, timeout: float, as_json: bool) -> None:
    """Move the pending work of receiver OLD (renamed or removed by an upgrade) to NEW, once.

    OLD and NEW are receiver ids (plugin.receiver), or plugin names for a renamed plugin (each
    receiver goes to NEW's receiver of the same name). OLD's queued, retrying, failed, paused or
    timed-out outcomes become `retargeted`, never run by OLD again, and NEW gets each event with
    its recorded arguments, unless it has it already or the ledger says it finished it."""
    result = _batches(lambda: retarget.retarget(old, new, dry_run=dry_run), dry_run)
    found: list[dict[str, Any]] = []
    if result["retargeted"] and not dry_run and not no_wait:
        found, result["finished"] = wait_for_outcome_ids(result["retargeted"], timeout)
    result["failed"] = sum(1 for o in found if o["status"] in ("failed", "paused"))
    if as_json:
        echo_json(result)
    elif dry_run:
        click.echo(f"{old} -> {new}: would move {result['pending']} pending outcome(s)"
                   + (" (the first 1000; more wait)" if result["more"] else ""))
        for outcome_id in result["outcomes"]:
            click.echo(f"  {outcome_id}")
    else:
        click.echo(f"{old} -> {new}: {result['pending']} pending outcome(s); moved {len(result['retargeted'])} "
                   f"({len(result['jobs'])} job(s)), {len(result['already_delivered'])} already delivered to "
                   f"{new}, {len(result['skipped'])} skipped ({new} does not act on the class), "
                   f"{len(result['finished_before'])} finished before")
        if found:
            print_outcomes(found)
    if result["failed"] or result.get("finished") is False:
        sys.exit(1)


@click.command("drop")
@click.argument("old")
@click.option("--dry-run", is_flag=True, help="List the pending outcomes that would be dropped; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def drop_command(old: str, dry_run: bool, as_json: bool) -> None:
    """Drop the pending work of receiver (or plugin) OLD, removed by an upgrade: its queued,
    retrying, failed, paused or timed-out outcomes become `dropped`, never run."""
    result = _batches(lambda: retarget.drop(old, dry_run=dry_run), dry_run)
    if as_json:
        echo_json(result)
    elif dry_run:
        click.echo(f"{old}: would drop {result['pending']} pending outcome(s)"
                   + (" (the first 1000; more wait)" if result["more"] else ""))
        for outcome_id in result["outcomes"]:
            click.echo(f"  {outcome_id}")
    else:
        click.echo(f"{old}: dropped {len(result['dropped'])} pending outcome(s), "
                   f"{len(result['finished_before'])} finished before")
