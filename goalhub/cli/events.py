"""``goalhub fire``, ``outcomes``, ``retry`` and ``outbound``: signals in, outcomes and calls out.

When no RQ worker is running, the commands that wait for receivers run the queued jobs
in-process (RQ ``SimpleWorker``), so they work on a bare install too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from goalhub import breaker, dispatch, outbound, receivers, testfire, validation, worker
from goalhub import stale as staleness
from goalhub.cli.introspect import check_goal_class
from goalhub.cli.output import (
    acts_on,
    clock,
    echo_json,
    ms,
    outcome_json,
    print_outcomes,
    receiver_dict,
    status_style,
    table,
)
from goalhub.connection import embedded_redis, get_redis
from goalhub.errors import BadRequest, NotFound
from goalhub.goaltypes import TEST_FIRE
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.plugins import get_plugin_manager, plugin_info
from goalhub.signals import EVENTS
from goalhub.store import get_database


def _rq_logs_to_stderr() -> None:
    """RQ logs to stdout unless its loggers already have a handler: give them one on stderr
    (warnings and worse), so that stdout carries only the command's output (``--json``)."""
    for name in ("rq.scheduler", "rq.worker", "rq.job"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "goalhub_stderr", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setLevel(logging.WARNING)
            handler.goalhub_stderr = True  # type: ignore[attr-defined]
            logger.addHandler(handler)


def _say_retrying(o: dict[str, Any]) -> None:
    click.echo(f"{o['plugin']}.{o['receiver']} failed ({o.get('error')}); retrying", err=True)


def wait_for_outcomes(
    fetch: Callable[[], tuple[list[dict[str, Any]], bool]], timeout: float
) -> tuple[list[dict[str, Any]], bool]:
    """``goalhub.worker.wait_for_outcomes``, saying on stderr which receiver waits for a retry
    (and RQ's logs on stderr, should it drain here)."""
    _rq_logs_to_stderr()
    return worker.wait_for_outcomes(fetch, timeout, on_retrying=_say_retrying)


def wait_for_outcome_ids(ids: list[str], timeout: float) -> tuple[list[dict[str, Any]], bool]:
    """``wait_for_outcomes`` of the outcome records with these ids (all written already)."""
    return wait_for_outcomes(lambda: (list(get_database().outcomes.find({"_id": {"$in": ids}})), True), timeout)


@click.command()
@click.argument("signal_name", metavar="SIGNAL", type=click.Choice(list(EVENT_HOOKS)))
@click.option("--cls", "goal_class", required=True, help="The goal class (_cls), e.g. ConfettiGoal.")
@click.option(
    "--goal-id", default=None, help="Goal id (default: a fresh one; a stored goal lends its fields)."
)
@click.option("--session-id", default=None, help="Session id (default: a fresh test session).")
@click.option("--streamer-id", default=None, help="Streamer id (default: a fresh one).")
@click.option("--context", "context_json", default="{}", help="JSON object merged into the goal's context.")
@click.option("--plugin", "only", multiple=True, metavar="NAME",
              help="Deliver only to this plugin (or plugin.receiver); repeatable.")
@click.option("--dry-run", is_flag=True, help="Run nothing; list the receivers that would act.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the outcomes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (logs go to stderr).")
def fire(
    signal_name: str,
    goal_class: str,
    goal_id: str | None,
    session_id: str | None,
    streamer_id: str | None,
    context_json: str,
    only: tuple[str, ...],
    dry_run: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Send a test signal (goal.created, goal.added, goal.ended) and show each receiver's outcome.

    The goal is a realistic sample of its goal type (with the documents it refers to), marked
    as a test fire's like its outcomes: `goalhub outcomes --purge-test` removes them all.
    """
    goal_id = validation.object_id(goal_id, "--goal-id") if goal_id else None
    session_id = validation.object_id(session_id, "--session-id") if session_id else None
    streamer_id = validation.object_id(streamer_id, "--streamer-id") if streamer_id else None
    try:
        context = json.loads(context_json)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"--context is not JSON: {exc}") from None
    if not isinstance(context, dict):
        raise BadRequest("--context must be a JSON object")
    check_goal_class(goal_class)
    chosen = _chosen_receivers(signal_name, only)
    if dry_run:
        plan = [(r, acts) for r, acts in receivers.dry_run(signal_name, goal_class) if r.id in chosen]
        if as_json:
            echo_json(
                {
                    "event": signal_name,
                    "cls": goal_class,
                    "dry_run": True,
                    "receivers": [receiver_dict(r) | {"acts": acts} for r, acts in plan],
                }
            )
            return
        click.echo(f"{signal_name} for {goal_class}: dry run, nothing sent")
        table(
            ["", "RECEIVER", "ACTS ON", "FROM"],
            [
                ["acts" if acts else "skips", r.id, acts_on(r), plugin_info(r.plugin).dist or ""]
                for r, acts in plan
            ],
            {0: lambda cell: {"fg": "green" if cell.strip() == "acts" else "bright_black"}},
        )
        return
    with embedded_redis():
        _fire(signal_name, goal_class, goal_id, session_id, streamer_id, context, only, timeout, as_json)


def _chosen_receivers(event: str, only: tuple[str, ...]) -> set[str]:
    """The ids of the receivers of ``event`` a fire delivers to (``--plugin``: those named)."""
    found = receivers.receivers(event)
    if not only:
        return {r.id for r in found}
    names = {r.id for r in found} | _loaded_plugins()
    unknown = [name for name in only if name not in names]
    if unknown:
        raise BadRequest(f"no plugin or receiver {unknown[0]!r}; loaded: {', '.join(sorted(_loaded_plugins()))}")
    return {r.id for r in found if r.plugin in only or r.id in only}


def _loaded_plugins() -> set[str]:
    return {name for name, _ in get_plugin_manager().list_name_plugin()}


def _fire(signal_name: str, goal_class: str, goal_id: str | None, session_id: str | None,
          streamer_id: str | None, context: dict[str, Any], only: tuple[str, ...], timeout: float,
          as_json: bool) -> None:
    db = get_database()
    get_redis().ping()  # Redis down: one line, before anything is written
    goal = testfire.goal(db, goal_class, goal_id=goal_id, session_id=session_id, user_id=streamer_id,
                         context=context)
    goal_id = str(goal["_id"])
    arguments = testfire.arguments(signal_name, goal, streamer_id=streamer_id)
    started = time.time()
    if only:
        dispatch.deliver(signal_name, arguments, only=only)
    else:
        EVENTS[signal_name][0].send(signal_name, **arguments)

    def this_fire(o: dict[str, Any]) -> bool:  # a stored goal's earlier outcomes stay as they were
        return dispatch.recorded_at(o) >= started - 1

    def fired() -> tuple[list[dict[str, Any]], bool]:
        outcomes, complete = dispatch.delivered_outcomes(goal_id)
        return [o for o in outcomes if this_fire(o) or (o["event"] == signal_name and not only)], complete

    try:
        outcomes, finished = wait_for_outcomes(fired, timeout)
    finally:
        testfire.mark(db, [o["_id"] for o in fired()[0] if this_fire(o)])
    failed = [o for o in outcomes if o["status"] == "failed"]
    if as_json:
        echo_json(
            {
                "event": signal_name,
                "arguments": arguments,
                "finished": finished,
                "test_fire": True,
                "outcomes": [outcome_json(o) for o in outcomes],
            }
        )
    else:
        click.echo(f"{signal_name} sent for {goal_class} {goal_id}")
        print_outcomes(outcomes, since=started)
    if not finished:
        raise click.ClickException(
            f"timed out after {timeout:g}s waiting for receivers (is a worker running?)"
        )
    if failed:
        click.echo(
            f"{len(failed)} receiver(s) failed; `goalhub retry --goal {goal_id}` runs them again", err=True
        )
        sys.exit(1)


# -- outcomes, retry, outbound ----------------------------------------------------------


@click.command()
@click.option("--goal", "goal_id", default=None, help="Only this goal's outcomes.")
@click.option("--failed", is_flag=True, help="Only failed outcomes.")
@click.option("--stale", is_flag=True,
              help="Only work running, queued or creating for longer than --older-than, each with a hint.")
@click.option("--older-than", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds after which --stale counts work as stale.")
@click.option("--no-test", is_flag=True, help="Leave out the outcomes of test fires.")
@click.option("--purge-test", is_flag=True,
              help="Delete everything test fires wrote (goals, sessions, outcomes, failed jobs, and what each "
                   "plugin's purge_test_fires hook deletes) and exit.")
@click.option("--json", "as_json", is_flag=True)
def outcomes(goal_id: str | None, failed: bool, stale: bool, older_than: float, no_test: bool, purge_test: bool,
             as_json: bool) -> None:
    """Receiver outcomes (ok, skipped, queued, retrying, failed), oldest first; a test fire's
    are marked "test". --stale: what has been running or creating too long, and why."""
    if stale:
        _stale(older_than, as_json)
        return
    if purge_test:
        with embedded_redis():
            counts = testfire.purge(get_database())
        if as_json:
            echo_json(counts)
        else:
            click.echo("purged test fires: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
        return
    query: dict[str, Any] = {}
    if no_test:
        query[TEST_FIRE] = {"$ne": True}
    if goal_id:
        query["goal_id"] = validation.object_id(goal_id, "--goal")
    if failed:
        query["status"] = "failed"
    found = sorted(get_database().outcomes.find(query), key=dispatch.recorded_at)
    if as_json:
        echo_json([outcome_json(o) for o in found])
        return
    for receiver_id, state in breaker.tripped().items():
        click.echo(click.style(f"{receiver_id} is paused (circuit breaker, {state['failures']} failed events): "
                               f"{state['last_error']}; `goalhub resume {receiver_id}`", fg="red"), err=True)
    if not found:
        click.echo("No outcomes.")
        return
    table(
        ["STATUS", "OUTCOME ID", "TRIES", "DURATION", "TEST", "ERROR"],
        [
            [o["status"], o["_id"], o.get("attempts", ""), ms(o.get("duration_ms")),
             "test" if o.get(TEST_FIRE) else "", o.get("error") or ""]
            for o in found
        ],
        {0: status_style, 5: lambda _: {"fg": "red"}},
    )


def _stale(older_than: float, as_json: bool) -> None:
    found = staleness.stale(older_than)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo(f"Nothing running or creating for longer than {older_than:g} s.")
        return
    table(["KIND", "STATUS", "AGE", "ID", "HINT"],
          [[item["kind"], item["status"], f"{item['age']:g} s", item["id"], item["hint"]] for item in found],
          {1: status_style})


@click.command()
@click.argument("outcome_ids", nargs=-1)
@click.option("--goal", "goal_id", default=None, help="Retry this goal's failed outcomes.")
@click.option("--all-failed", is_flag=True, help="Retry every failed outcome.")
@click.option("--no-wait", is_flag=True, help="Enqueue and return without waiting for the outcomes.")
@click.option("--timeout", default=60.0, show_default=True)
def retry(
    outcome_ids: tuple[str, ...], goal_id: str | None, all_failed: bool, no_wait: bool, timeout: float
) -> None:
    """Run failed receivers again and show how it went."""
    db = get_database()
    ids = list(outcome_ids)
    if goal_id or all_failed:
        query: dict[str, Any] = {"status": "failed"}
        if goal_id:
            query["goal_id"] = validation.object_id(goal_id, "--goal")
        ids += [o["_id"] for o in db.outcomes.find(query, {"_id": 1})]
    if not ids:
        raise BadRequest("nothing to retry: give outcome ids, --goal ID or --all-failed")
    for outcome_id in ids:
        try:
            dispatch.retry_outcome(outcome_id)
        except LookupError:
            raise NotFound(f"no failed outcome {outcome_id!r} (see `goalhub outcomes --failed`)") from None
        click.echo(f"retrying {outcome_id}", err=True)
    if no_wait:
        return
    found, finished = wait_for_outcome_ids(ids, timeout)
    print_outcomes(found)
    if not finished:
        raise click.ClickException(
            f"timed out after {timeout:g}s waiting for receivers (is a worker running?)"
        )
    if any(o["status"] == "failed" for o in found):
        sys.exit(1)


@click.command("outbound")
@click.option(
    "--kind", default=None, help="Only this kind of call, as the plugin that made it names it (see --kinds)."
)
@click.option("--kinds", "list_kinds", is_flag=True, help="List the kinds of call recorded so far.")
@click.option("--goal", "goal_id", default=None)
@click.option("--json", "as_json", is_flag=True)
def outbound_command(kind: str | None, list_kinds: bool, goal_id: str | None, as_json: bool) -> None:
    """Recorded outbound calls (send_once), of every kind the installed plugins record."""
    if list_kinds:
        recorded = outbound.kinds()
        if as_json:
            echo_json(recorded)
        else:
            click.echo("\n".join(recorded) if recorded else "No outbound calls.")
        return
    found = outbound.records(kind, validation.object_id(goal_id, "--goal") if goal_id else None)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("No outbound calls.")
        return
    table(
        ["TIME", "KIND", "STATUS", "GOAL", "KEY", "PAYLOAD"],
        [
            [
                clock(r.get("created_at")),
                r["kind"],
                r["status"],
                r.get("goal_id") or "",
                r["key"],
                json.dumps(r.get("payload"), default=str, ensure_ascii=False)[:100],
            ]
            for r in found
        ],
    )
