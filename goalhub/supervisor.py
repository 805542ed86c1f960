"""Run goalhub's processes together (``goalhub up``, ``make demo``) and stop them all.

Each child runs in its own process group, so a signal meant for it also reaches what it
forked (gunicorn workers, the rq worker's scheduler). RQ's work-horses put themselves in
a group of their own (``os.setpgrp``), which is why stopping also kills every remaining
descendant by pid, and why the supervisor becomes a child subreaper on Linux: a horse
orphaned by a worker that died is re-parented to the supervisor rather than escaping it.

Stopping: SIGTERM to every child's group, a grace period, then SIGKILL to whatever is
left. A child that exits on its own while the others run stops everything, with a
non-zero exit code.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import click
import psutil
import redis

from goalhub import config, connection

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


def goalhub_command(*args: str) -> list[str]:
    """``python -m goalhub <args>`` with this interpreter."""
    return [sys.executable, "-m", "goalhub", *args]


def goalhub_processes(
    host: str, port: int, workers: int, api_workers: int = 2
) -> list[tuple[str, list[str]]]:
    """The processes of a goalhub installation: the API, ``workers`` RQ workers, the scheduler."""
    processes = [
        ("api", goalhub_command("serve", "--host", host, "--port", str(port), "--workers", str(api_workers)))
    ]
    for number in range(1, workers + 1):
        processes.append((f"worker-{number}", goalhub_command("worker")))
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
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._own_before: set[int] = set()

    # -- output ---------------------------------------------------------------------

    def say(self, name: str, line: str, colour: str = "white") -> None:
        prefix = click.style(f"{name:<{self._width}} |", fg=colour, bold=name == "goalhub")
        with self._lock:
            click.echo(f"{prefix} {line}", file=self.output, color=self.color)

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
            self.say("goalhub", f"started {child.name} (pid {child.process.pid}): {' '.join(child.argv[1:])}")

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
                if orphan.pid not in self._own_before:
                    found.setdefault(orphan.pid, orphan)
                    found.update((p.pid, p) for p in orphan.children(recursive=True))
        return list(found.values())

    def _reap_orphans(self) -> None:
        """Collect the exit status of orphans re-parented here, so no zombie is left behind."""
        with contextlib.suppress(psutil.Error):
            for orphan in psutil.Process().children():
                if orphan.pid not in self._own_before:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(orphan.pid, os.WNOHANG)

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def run(self, ready: Callable[[], bool] | None = None, ready_message: str = "") -> int:
        """Start, wait for SIGINT/SIGTERM/SIGHUP or a child's exit, stop everything.

        Returns 0 after a signal, 1 when a child exited on its own.
        """
        wake = threading.Event()
        received: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            if received:  # a second Ctrl-C: stop waiting for a graceful exit
                self._force.set()
            received.append(signum)
            wake.set()

        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, on_signal) for signum in handled}
        code = 0
        try:
            self.start()
            announced = ready is None
            while not wake.wait(0.1):
                child = self.exited()
                if child is not None:
                    assert child.process is not None
                    self.say(
                        "goalhub",
                        f"{child.name} exited with code {child.process.returncode}; stopping everything",
                        "red",
                    )
                    code = 1
                    break
                if not announced and ready is not None and ready():
                    self.say("goalhub", ready_message or "ready", "bright_white")
                    announced = True
            if received:
                self.say("goalhub", f"{signal.Signals(received[0]).name} received; stopping everything")
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.say("goalhub", "stopped" if code == 0 else "stopped after a failure", "red" if code else "white")
        return code


@contextlib.contextmanager
def embedded_redis(say: Callable[[str], None] = lambda line: None) -> Iterator[None]:
    """Run the embedded Redis (when ``GOALHUB_REDIS_URL`` is unset) for the duration.

    It is stopped afterwards only if this started it and no other client still uses it:
    an embedded Redis is shared by every goalhub process using the same home.
    """
    if config.redis_url():
        yield
        return
    home = config.home()
    was_running = connection.embedded_redis_running(home)
    socket_path = connection.ensure_embedded_redis(home)
    say(f"embedded Redis {'already running' if was_running else 'started'} at {socket_path}")
    try:
        yield
    finally:
        if not was_running:
            connection.get_redis().connection_pool.disconnect()  # this process's own connections
            others = _other_redis_clients(str(socket_path))
            if others:
                say(f"embedded Redis left running: {others} other client(s) still use it")
            else:
                connection.stop_embedded_redis(home)
                say("embedded Redis stopped")


def _other_redis_clients(socket_path: str) -> int:
    try:
        client = redis.Redis(unix_socket_path=socket_path, socket_timeout=2)
        return max(len(client.client_list()) - 1, 0)  # the list includes this connection
    except (redis.RedisError, OSError):
        return 0


def _become_subreaper() -> None:
    # Linux only: orphaned work-horses are re-parented here, so they can be found and stopped.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
