"""``goalhub serve``, ``worker``, ``scheduler`` and ``up``: the long-running processes, and
``goalhub reload``, which restarts those of a running ``up`` one at a time."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import psutil

from goalhub import config, liveview, logs, metrics, plugins
from goalhub.connection import embedded_redis
from goalhub.errors import NotFound
from goalhub.supervisor import Child, Supervisor, goalhub_processes


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(min=1), help="HTTP worker processes"
)
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1, max=64),
              help="Threads per HTTP worker process (fewer spend less CPU on a machine of few cores)")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the HTTP API with a production WSGI server."""
    logs.configure("api")
    from goalhub import api  # imported here: only this command needs Flask and waitress

    api.serve(host, port, workers, threads)


@click.command()
@click.option("--burst", is_flag=True, help="Quit when the queues are empty.")
@click.option("--pool", "pool", default=None, type=click.IntRange(min=1, max=64), metavar="N",
              help="Run N non-forking workers under one parent (RQ's WorkerPool): a dead one is replaced "
                   "and its job recovered at once.")
@click.option("--fork", "fork", is_flag=True,
              help="One forking worker: a fresh work-horse process per job (the default without --pool).")
@click.option("--simple", is_flag=True, help="One worker that runs jobs in this process (nothing replaces it).")
@click.option("--name", default=None, help="Worker name (default: RQ's; not with --pool).")
@click.option("--metrics-port", default=None, type=click.IntRange(min=1, max=65535),
              help="Serve this machine's Prometheus metrics on this port (no API process needed).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address --metrics-port listens on (the endpoint has no authentication).")
def worker(burst: bool, pool: int | None, fork: bool, simple: bool, name: str | None,
           metrics_port: int | None, metrics_host: str) -> None:
    """Run RQ workers on goalhub's queues, with the plugins loaded."""
    if sum((pool is not None, fork, simple)) > 1:
        raise click.UsageError("choose one of --pool, --fork and --simple")
    if pool is not None and name:
        raise click.UsageError("--name names one worker: a pool names its workers itself")
    logs.configure("worker")  # first: a failing import is logged as the other lines are
    if metrics_port is not None:
        try:
            metrics.serve(metrics_host, metrics_port)
        except OSError as exc:  # a port in use, an address not of this machine: one line, exit 1
            raise click.ClickException(f"cannot serve metrics on {metrics_host[:100]}:{metrics_port}: {exc}") from None
    if pool is not None:
        from goalhub.pool import run_pool  # deferred: only this command needs RQ's worker and the jobs

        run_pool(pool, burst=burst)
        return
    from goalhub.worker import run_worker  # deferred: only this command needs RQ's worker and the jobs

    run_worker(burst=burst, simple=simple, name=name)


@click.command()
@click.option(
    "--interval",
    type=float,
    default=None,
    help=f"Seconds between polls [default: {config.Settings.fields['SCHEDULER_INTERVAL'].default}]",
)
@click.option("--burst", is_flag=True, help="Move due jobs once and quit.")
def scheduler(interval: float | None, burst: bool) -> None:
    """Run rq-scheduler: goal activation at nbf and end at exp."""
    logs.configure("scheduler")
    from goalhub.scheduler import run_scheduler  # deferred: only this command needs rq-scheduler and the jobs

    plugins.get_plugin_manager()  # broken plugins are logged by every process at start
    liveview.start("scheduler")
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
@click.option("--api-threads", default=4, show_default=True, type=click.IntRange(min=1, max=64),
              help="Threads per HTTP worker process")
@click.option("--fork", is_flag=True,
              help="Forking workers (a process per job) instead of one pool of non-forking workers.")
@click.option(
    "--stop-timeout", default=10.0, show_default=True, type=float, help="Seconds to wait before SIGKILL"
)
def up(host: str, port: int, workers: int, api_workers: int, api_threads: int, fork: bool, stop_timeout: float) -> None:
    """Run everything: embedded Redis (unless GOALHUB_REDIS_URL), API, workers, scheduler.

    The workers are one pool of non-forking workers (``goalhub worker --pool N``) unless
    --fork asks for N forking workers.

    A process that crashes is restarted with backoff (1, 2, 4 ... 30 s); one that crashes
    GOALHUB_RESTART_LIMIT times in GOALHUB_RESTART_WINDOW s stops everything. Ctrl-C or
    SIGTERM stops every process it started. SIGHUP (or `goalhub reload`) restarts them
    one at a time, not counted as crashes, loading the plugins installed now. Changes in the
    live view of plugin health (every process's report) are printed as they happen.
    """
    import requests  # deferred: heavy, and only this command polls the API

    _report_broken_plugins()
    # Read by people at a terminal: the children log console lines unless told otherwise.
    os.environ.setdefault("GOALHUB_LOG_FORMAT", "console")

    supervisor = Supervisor(goalhub_processes(host, port, workers, api_workers, fork, api_threads),
                            stop_timeout=stop_timeout)
    base = f"http://{host}:{port}"
    pidfile, statefile = _up_files()
    pidfile.write_text(str(os.getpid()))

    def ready() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=0.5).ok
        except requests.RequestException:
            return False

    def ready_after(child: Child, since: float) -> bool:
        """The child's processes started since ``since`` report to the live view (and for the
        API, only they: the ones it replaced are gone)."""
        assert child.process is not None
        pid = child.process.pid
        reports = [e for e in liveview.processes() if not e["stale"] and (e["pid"] == pid or e["ppid"] == pid)]
        if child.name == "api":
            return len(reports) >= api_workers and all(e["started_at"] >= since for e in reports)
        return any(e["started_at"] >= since for e in reports)

    def write_state(state: dict[str, Any]) -> None:
        statefile.write_text(json.dumps({**state, "pid": os.getpid()}))
        if state["state"] != "reloading":
            shown.clear()  # say the live view again after a reload

    shown: list[str] = []

    def say_live_view() -> None:
        lines = liveview.summary(liveview.health())
        if lines != shown:
            shown[:] = lines
            for line in lines:
                supervisor.say("goalhub", line, "white" if lines[0].startswith("live view: ready") else "red")

    supervisor.ready_after = ready_after
    supervisor.reload_state = write_state
    with embedded_redis(lambda line: supervisor.say("goalhub", line)) as redis_server:
        checked = [0.0]

        def watch() -> None:
            if redis_server:
                redis_server.watch()
            if supervisor.announced and time.monotonic() - checked[0] >= config.settings().LIVE_INTERVAL:
                checked[0] = time.monotonic()
                say_live_view()

        try:
            code = supervisor.run(ready, f"goalhub is up: {base} (dashboard {base}/rq); Ctrl-C stops everything; "
                                  "`goalhub reload` restarts the processes one at a time", watch=watch)
        finally:
            pidfile.unlink(missing_ok=True)
    sys.exit(code)


def _up_files() -> tuple[Path, Path]:
    """Where a running ``goalhub up`` leaves its pid and the state of its last reload."""
    return config.home() / "up.pid", config.home() / "up.reload"


@click.command()
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for the reload to finish.")
@click.option("--no-wait", is_flag=True, help="Ask for the reload and return at once.")
def reload(timeout: float, no_wait: bool) -> None:
    """Restart the processes of the running `goalhub up` (same GOALHUB_HOME) one at a time.

    The API keeps answering (its processes are replaced one by one, each new one serving
    before an old one drains), a worker finishes its current job first, and none of it counts
    as a crash. Every process then runs the plugins installed now. Same as SIGHUP to `up`.
    Exits 1 if the reload failed, or if a process then fails to load a plugin or runs other
    plugins than are installed (the live view is printed either way).
    """
    pidfile, statefile = _up_files()
    try:
        pid = int(pidfile.read_text().strip())
        command = psutil.Process(pid).cmdline()
    except (OSError, ValueError, psutil.Error):
        raise NotFound(f"no `goalhub up` is running with GOALHUB_HOME={config.home()}",
                       code="not_running") from None
    if "up" not in command[2:] or "goalhub" not in " ".join(command):
        raise NotFound(f"pid {pid} in {pidfile} is not a `goalhub up`", code="not_running")
    before = statefile.stat().st_mtime_ns if statefile.exists() else 0
    asked = time.time()
    os.kill(pid, signal.SIGHUP)
    click.echo(f"asked goalhub up (pid {pid}) to reload")
    if no_wait:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if not statefile.exists() or statefile.stat().st_mtime_ns == before:
            continue
        state = json.loads(statefile.read_text() or "{}")
        if state.get("state") in ("done", "failed") and state.get("started_at", 0) >= asked - 1:
            view = liveview.health()
            for line in liveview.summary(view):
                click.echo(line)
            if state["state"] != "done":
                click.secho(f"reload failed after {state.get('took')} s (see goalhub up's output)", fg="red", err=True)
                sys.exit(1)
            click.echo(f"reloaded in {state.get('took')} s")
            # A process that still fails to load a plugin, or runs other plugins than are
            # installed, makes the reload a failure for a script (a tripped breaker does not:
            # a reload does not change it).
            unclean = sorted({pid for p in view["problems"] for pid in p["processes"]} | set(view["reload_needed"]))
            if unclean:
                click.secho(f"but {len(unclean)} process(es) do not run the installed plugins cleanly "
                            f"(above): {', '.join(unclean)}", fg="red", err=True)
                sys.exit(1)
            return
    click.secho(f"the reload did not finish within {timeout:g} s", fg="red", err=True)
    sys.exit(1)


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
