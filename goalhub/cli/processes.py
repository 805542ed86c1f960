"""``goalhub serve``, ``worker``, ``scheduler`` and ``up``: the long-running processes."""

from __future__ import annotations

import os
import sys

import click

from goalhub import config, logs, plugins
from goalhub.connection import embedded_redis
from goalhub.supervisor import Supervisor, goalhub_processes


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(min=1), help="HTTP worker processes"
)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API with a production WSGI server."""
    logs.configure("api")
    from goalhub import api  # imported here: only this command needs Flask and waitress

    api.serve(host, port, workers)


@click.command()
@click.option("--burst", is_flag=True, help="Quit when the queues are empty.")
@click.option("--simple", is_flag=True, help="Run jobs in this process instead of forking a work-horse.")
@click.option("--name", default=None, help="Worker name (default: RQ's).")
def worker(burst: bool, simple: bool, name: str | None) -> None:
    """Run an RQ worker on goalhub's queues, with the plugins loaded."""
    logs.configure("worker")  # first: a failing import is logged as the other lines are
    from goalhub.worker import run_worker  # deferred: only this command needs RQ's worker and the jobs

    run_worker(burst=burst, simple=simple, name=name)


@click.command()
@click.option(
    "--interval",
    type=float,
    default=None,
    help=f"Seconds between polls [default: {config.Settings.model_fields['SCHEDULER_INTERVAL'].default}]",
)
@click.option("--burst", is_flag=True, help="Move due jobs once and quit.")
def scheduler(interval: float | None, burst: bool) -> None:
    """Run rq-scheduler: goal activation at nbf and end at exp."""
    logs.configure("scheduler")
    from goalhub.scheduler import run_scheduler  # deferred: only this command needs rq-scheduler and the jobs

    plugins.get_plugin_manager()  # broken plugins are logged by every process at start
    run_scheduler(interval=interval, burst=burst)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="RQ worker processes"
)
@click.option(
    "--api-workers", default=2, show_default=True, type=click.IntRange(min=1), help="HTTP worker processes"
)
@click.option(
    "--stop-timeout", default=10.0, show_default=True, type=float, help="Seconds to wait before SIGKILL"
)
def up(host: str, port: int, workers: int, api_workers: int, stop_timeout: float) -> None:
    """Run everything: embedded Redis (unless GOALHUB_REDIS_URL), API, workers, scheduler.

    A process that crashes is restarted with backoff (1, 2, 4 ... 30 s); one that crashes
    GOALHUB_RESTART_LIMIT times in GOALHUB_RESTART_WINDOW s stops everything. Ctrl-C or
    SIGTERM stops every process it started.
    """
    import requests  # deferred: heavy, and only this command polls the API

    _report_broken_plugins()
    # Read by people at a terminal: the children log console lines unless told otherwise.
    os.environ.setdefault("GOALHUB_LOG_FORMAT", "console")

    supervisor = Supervisor(goalhub_processes(host, port, workers, api_workers), stop_timeout=stop_timeout)
    base = f"http://{host}:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=0.5).ok
        except requests.RequestException:
            return False

    with embedded_redis(lambda line: supervisor.say("goalhub", line)) as redis_server:
        code = supervisor.run(ready, f"goalhub is up: {base} (dashboard {base}/rq); Ctrl-C stops everything",
                              watch=redis_server.watch if redis_server else None)
    sys.exit(code)


def _report_broken_plugins() -> None:
    """A plugin that failed to load is said at start, not only in a worker's log; in strict
    mode (GOALHUB_STRICT_PLUGINS=1) nothing starts."""
    broken = plugins.problems()
    if not broken:
        return
    strict = config.settings().STRICT_PLUGINS
    click.secho(f"goalhub: {len(broken)} plugin problem(s); "
                + ("GOALHUB_STRICT_PLUGINS is set, nothing starts" if strict else "the other plugins run"),
                fg="red", bold=True, err=True)
    for problem in broken:
        state = "loaded" if problem["loaded"] else "NOT LOADED"
        click.secho(f"  {problem['plugin']} ({state}): {problem['reason']}", fg="red", err=True)
    if strict:
        sys.exit(1)
