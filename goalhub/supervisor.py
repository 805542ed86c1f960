"""Run goalhub's processes together (``goalhub up``, ``make demo``) and stop them all.

Each child runs in its own process group, so a signal meant for it also reaches what it
forked (the API processes, the rq worker's scheduler). RQ's work-horses put themselves in
a group of their own (``os.setpgrp``), which is why stopping also kills every remaining
descendant by pid, and why the supervisor becomes a child subreaper on Linux: a horse
orphaned by a worker that died is re-parented to the supervisor rather than escaping it.

Healing: a child that exits on its own (a worker killed with ``kill -9``, an API process
that crashed) is started again after a backoff of 1, 2, 4 ... 30 s (back to 1 s once it had
run ``STABLE_AFTER`` seconds), and the restart is logged. A child that crashes ``GOALHUB_RESTART_LIMIT`` times (5) within
``GOALHUB_RESTART_WINDOW`` seconds (60) is crashing in a loop: then everything stops, with
a non-zero exit code. The embedded Redis is watched the same way (``goalhub.connection.EmbeddedRedis``):
started again when it stops answering, and every redis-server that served this run,
whoever started it, is stopped at the end.

Reloading (SIGHUP, ``goalhub reload``): the children are restarted one at a time, so the
API keeps answering and the plugins installed now load everywhere. The API child is told to
reload (SIGHUP: it replaces its serving processes one by one, ``goalhub.api.server``); a worker
or the scheduler gets SIGTERM (a worker finishes its current job first) and is started again
at once. Each next child waits until the previous one is ready again (``ready_after``: its new
processes report to the live view). A reload is not a crash: it is not counted, and the
restart count stays as it was. Its state is written to ``<home>/up.reload`` for ``goalhub reload``.

Stopping: on Ctrl-C or SIGTERM, SIGTERM to every child's group, a grace period, then SIGKILL
to whatever is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import click
import psutil

from goalhub import config, logs

# A child that ran this long before it exited was healthy: its next restart waits 1 s again.
STABLE_AFTER = 10.0
COLOURS = ("cyan", "green", "yellow", "magenta", "blue", "bright_cyan", "bright_green", "bright_yellow")
_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    colour: str = "cyan"
    lines: list[str] = field(default_factory=list)
    crashes: list[float] = field(default_factory=list)  # monotonic times of its unplanned exits
    restart_at: float | None = None
    restarts: int = 0
    started_at: float = 0.0
    quick_exits: int = 0  # consecutive runs shorter than STABLE_AFTER: the backoff's exponent
    reloading: bool = False  # asked to stop by a reload: started again at once, not a crash
    reloads: int = 0


def goalhub_command(*args: str) -> list[str]:
    """``python -m goalhub <args>`` with this interpreter."""
    return [sys.executable, "-m", "goalhub", *args]


def goalhub_processes(
    host: str, port: int, workers: int, api_workers: int = 2, fork: bool = False, api_threads: int = 4
) -> list[tuple[str, list[str]]]:
    """The processes of a goalhub installation: the API (``api_workers`` processes of
    ``api_threads`` threads), ``workers`` RQ workers (one pool of non-forking workers,
    ``goalhub worker --pool``; with ``fork``, as many forking workers), the scheduler."""
    processes = [
        ("api", goalhub_command("serve", "--host", host, "--port", str(port), "--workers", str(api_workers),
                                "--threads", str(api_threads)))
    ]
    if fork:
        for number in range(1, workers + 1):
            processes.append((f"worker-{number}", goalhub_command("worker", "--fork")))
    else:
        processes.append(("workers", goalhub_command("worker", "--pool", str(workers))))
    processes.append(("scheduler", goalhub_command("scheduler")))
    return processes


class Supervisor:
    """Start named child processes, prefix and interleave their output, stop them all.

    ``output`` receives every child's lines as ``name | line``; colour follows click's
    rule (only on a terminal) unless ``color`` says otherwise.
    """

    def __init__(
        self,
        processes: list[tuple[str, list[str]]],
        *,
        env: dict[str, str] | None = None,
        output: IO[str] | None = None,
        color: bool | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.children = [
            Child(name, argv, colour=COLOURS[i % len(COLOURS)]) for i, (name, argv) in enumerate(processes)
        ]
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.output = output
        self.color = color
        self.stop_timeout = stop_timeout
        self._width = max((len(child.name) for child in self.children), default=0)
        # In JSON mode every line is one JSON object: a child's as it wrote it, the rest wrapped.
        self.json = (self.env.get("GOALHUB_LOG_FORMAT") or config.settings().LOG_FORMAT) == "json"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._own_before: set[int] = set()
        self._reload: threading.Thread | None = None
        self.announced = False  # everything came up once (``run``'s ``ready``)
        self.reload_state: Callable[[dict[str, Any]], None] = lambda state: None
        # (child, since) -> whether the child's processes started since then are ready (live view)
        self.ready_after: Callable[[Child, float], bool] = lambda child, since: True

    # -- output ---------------------------------------------------------------------

    def say(self, name: str, line: str, colour: str = "white") -> None:
        if self.json:
            text = line if line.startswith("{") and line.endswith("}") else logs.json_line(name, line)
        else:
            text = f"{click.style(f'{name:<{self._width}} |', fg=colour, bold=name == 'goalhub')} {line}"
        with self._lock:
            click.echo(text, file=self.output, color=self.color)

    def _pump(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        for raw in iter(child.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            child.lines.append(line)
            del child.lines[:-200]  # keep the tail for error reports
            self.say(child.name, line, child.colour)
        child.process.stdout.close()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._width = max(self._width, len("goalhub"))
        self._own_before = {p.pid for p in psutil.Process().children()}
        _become_subreaper()
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: signals reach what it forks
        )
        child.reader = threading.Thread(
            target=self._pump, args=(child,), name=f"pump-{child.name}", daemon=True
        )
        child.reader.start()
        child.started_at = time.monotonic()
        verb = "reloaded" if child.reloading else "restarted" if child.restarts else "started"
        self.say("goalhub", f"{verb} {child.name} (pid {child.process.pid}): {' '.join(child.argv[1:])}")

    def heal(self, now: float | None = None) -> Child | None:
        """Schedule a restart, with backoff, for each child that exited; start those that are due.
        Returns a child that crashed in a loop (then the caller stops everything), else None."""
        now = time.monotonic() if now is None else now
        limit, window = config.settings().RESTART_LIMIT, config.settings().RESTART_WINDOW
        for child in self.children:
            if child.process is None:
                continue
            if child.restart_at is None and child.process.poll() is not None and child.reloading:
                if child.reader is not None:
                    child.reader.join(timeout=1)
                if not self._stopping.is_set():
                    self._spawn(child)  # a reload stopped it: at once, not counted as a crash
                    child.reloads += 1
                child.reloading = False
            elif child.restart_at is None and child.process.poll() is not None:
                child.crashes = [t for t in child.crashes if now - t < window] + [now]
                # Kill what the dead child left in its process group (a work-horse, the API.s processes).
                _signal_group(child.process.pid, signal.SIGKILL)
                if len(child.crashes) >= limit:
                    self.say("goalhub", f"{child.name} exited with code {child.process.returncode}, its "
                             f"{len(child.crashes)}th crash within {window:g} s; stopping everything", "red")
                    return child
                child.quick_exits = 0 if now - child.started_at >= STABLE_AFTER else child.quick_exits + 1
                delay = min(2 ** max(child.quick_exits - 1, 0), 30)
                child.restart_at = now + delay
                self.say("goalhub", f"{child.name} exited with code {child.process.returncode}; restarting it "
                         f"in {delay:g} s (crash {len(child.crashes)} of {limit} allowed in {window:g} s)", "red")
            elif child.restart_at is not None and now >= child.restart_at and not self._stopping.is_set():
                if child.reader is not None:
                    child.reader.join(timeout=1)
                child.restart_at = None
                child.restarts += 1
                self._spawn(child)
        return None

    def reload(self, timeout: float = 300.0) -> bool:
        """Restart every child gracefully, one at a time (see the module's docstring); whether
        each came back ready. Runs in the calling thread; ``run`` calls it from a thread of its own."""
        started = time.time()
        self.reload_state({"state": "reloading", "started_at": started})
        self.say("goalhub", "reloading: restarting the processes one at a time")
        ok = True
        for child in self.children:
            if self._stopping.is_set() or child.process is None:
                break
            since = time.time()
            old = child.process
            if child.name == "api":
                _signal_pid(old.pid, signal.SIGHUP)  # it replaces its serving processes itself
            else:
                child.reloading = True
                _signal_pid(old.pid, signal.SIGTERM)  # a worker finishes its current job first
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not self._stopping.is_set():
                if child.process is not old or child.name == "api":
                    if self.ready_after(child, since):
                        break
                time.sleep(0.1)
            else:
                ok = False
                self.say("goalhub", f"reload: {child.name} was not ready again within {timeout:g} s", "red")
        state = "done" if ok and not self._stopping.is_set() else "failed"
        self.reload_state({"state": state, "started_at": started, "took": round(time.time() - started, 2)})
        self.say("goalhub", f"reload {state} in {time.time() - started:.1f} s", "white" if ok else "red")
        return ok

    def exited(self) -> Child | None:
        """The first child that has exited, if any."""
        return next(
            (c for c in self.children if c.process is not None and c.process.poll() is not None), None
        )

    def stop(self) -> None:
        """SIGTERM every child's group, wait ``stop_timeout``, SIGKILL what is left, reap."""
        self._stopping.set()
        tree = self._descendants()
        for child in self.children:
            if child.process is not None:
                _signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline and not self._force.is_set():
            if (
                all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in tree)
                and not self._running()
            ):
                break
            time.sleep(0.05)
        stragglers = {p.pid: p for p in tree + self._descendants() if _alive(p)}
        for process in stragglers.values():
            with contextlib.suppress(psutil.Error):
                self.say(
                    "goalhub",
                    f"killing pid {process.pid} ({process.name()}): still running after SIGTERM",
                    "red",
                )
                process.kill()
        for child in self.children:
            if child.process is not None:
                _signal_group(child.process.pid, signal.SIGKILL)
                child.process.wait()
            if child.reader is not None:
                child.reader.join(timeout=2)
        psutil.wait_procs([p for p in tree if _alive(p)], timeout=2)
        self._reap_orphans()

    def _running(self) -> bool:
        return any(c.process is not None and c.process.poll() is None for c in self.children)

    def _descendants(self) -> list[psutil.Process]:
        """Every process under the children, and orphans re-parented to this process."""
        found: dict[int, psutil.Process] = {}
        for child in self.children:
            if child.process is None:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(child.process.pid)
                found[root.pid] = root
                found.update((p.pid, p) for p in root.children(recursive=True))
        with contextlib.suppress(psutil.Error):
            for orphan in psutil.Process().children():
                if orphan.pid not in self._own_before and not _is_redis_server(orphan):
                    found.setdefault(orphan.pid, orphan)
                    found.update((p.pid, p) for p in orphan.children(recursive=True))
        return list(found.values())

    def _reap_orphans(self) -> None:
        """Collect the exit status of orphans re-parented here, so no zombie is left behind."""
        ours = {c.process.pid for c in self.children if c.process is not None}  # Popen reaps those
        with contextlib.suppress(psutil.Error):
            for orphan in psutil.Process().children():
                if orphan.pid not in self._own_before and orphan.pid not in ours:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(orphan.pid, os.WNOHANG)

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def run(
        self,
        ready: Callable[[], bool] | None = None,
        ready_message: str = "",
        watch: Callable[[], None] | None = None,
    ) -> int:
        """Start, restart children that exit, until SIGINT/SIGTERM or a crash loop; stop
        everything. SIGHUP reloads (``reload``, once everything is up; one at a time).
        ``watch`` is called about once a second (the embedded Redis's check).

        Returns 0 after a signal, 1 after a crash loop.
        """
        wake = threading.Event()
        received: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            if received:  # a second Ctrl-C: stop waiting for a graceful exit
                self._force.set()
            received.append(signum)
            wake.set()

        reloads: list[int] = []

        def on_reload(signum: int, frame: Any) -> None:
            reloads.append(signum)

        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, on_signal) for signum in handled}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_reload)
        code = 0
        try:
            self.start()
            announced = self.announced = ready is None
            watched = time.monotonic()
            while not wake.wait(0.1):
                if reloads and announced and (self._reload is None or not self._reload.is_alive()):
                    reloads.clear()
                    self._reload = threading.Thread(target=self.reload, name="goalhub-reload", daemon=True)
                    self._reload.start()
                if self.heal() is not None:
                    code = 1
                    break
                if time.monotonic() - watched >= 1:
                    watched = time.monotonic()
                    self._reap_orphans()  # an embedded Redis that exited, re-parented here
                    try:
                        if watch is not None:
                            watch()
                    except Exception as exc:  # noqa: BLE001  (reported; the next check tries again)
                        self.say("goalhub", f"embedded Redis check failed: {exc}", "red")
                if not announced and ready is not None and ready():
                    self.say("goalhub", ready_message or "ready", "bright_white")
                    announced = self.announced = True
            if received:
                self.say("goalhub", f"{signal.Signals(received[0]).name} received; stopping everything")
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.say("goalhub", "stopped" if code == 0 else "stopped after a failure", "red" if code else "white")
        return code


def _become_subreaper() -> None:
    # Linux only: orphaned work-horses are re-parented here, so they can be found and stopped.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _is_redis_server(process: psutil.Process) -> bool:
    # An embedded Redis re-parented here is stopped by connection.EmbeddedRedis (SHUTDOWN SAVE), not killed.
    try:
        return process.name() == "redis-server"
    except psutil.Error:
        return False


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
