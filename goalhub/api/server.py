"""waitress, pre-forked: the production WSGI server behind ``goalhub serve``.

Why waitress rather than gunicorn's ``gthread``: gunicorn hands a connection to a thread as
soon as its first byte arrives, and the thread then blocks reading the headers. Ten clients
sending one header line every few seconds held every thread, and ``/healthz`` went silent
for as long as they cared to hang on. waitress reads and parses requests in one
non-blocking I/O loop (its channels buffer the request line, headers and body) and gives a
request to a worker thread only once it is complete, so a slow client costs a file
descriptor, never a thread. ``gevent``/``eventlet`` workers would do it too, but they
monkey-patch sockets, threads and ``time`` under redis-py, RQ and SQLite: not worth the risk.

Processes: the parent binds the listening socket and forks ``workers`` children that each
build their own app after the fork (store and Redis connections are never shared, and the
plugins load in the child: the parent never imports one) and serve the same socket with
``threads`` threads. A child that dies is replaced (with a short backoff). SIGTERM drains each
of them (``goalhub.drain``: ``/readyz`` 503, stop accepting, finish what is in flight within a
grace), SIGINT stops them at once. Each child reports to the live view (``goalhub.liveview``).

Reload (SIGHUP to the parent, what ``goalhub reload`` sends through ``goalhub up``): the
children are replaced one at a time. A new child is forked and, once its app is built (its
plugins loaded afresh; it first reads the ``.pth`` files added since the parent started, so a
plugin installed editable meanwhile is found, as in a new process), an old one is told to
drain (SIGHUP to it: the same drain, without the 503 and the delay a load balancer needs,
since the new child already serves the same socket). The socket
never stops listening, so no request is refused. In production a buffering proxy (nginx,
an ALB) still sits in front: it absorbs slow clients at the edge and terminates TLS.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from goalhub import auth, config, drain, liveview, logs, metrics, plugins, tracing

log = logging.getLogger("goalhub.api.server")

# A client may keep this many connections open per process (each costs a file descriptor,
# not a thread); idle ones are closed after CHANNEL_TIMEOUT seconds.
CONNECTION_LIMIT = 512
CHANNEL_TIMEOUT = 30
MAX_HEADER_BYTES = 64 * 1024


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def waitress_options(threads: int) -> dict[str, Any]:
    return {
        "threads": threads,
        "connection_limit": CONNECTION_LIMIT,
        "channel_timeout": CHANNEL_TIMEOUT,
        "max_request_header_size": MAX_HEADER_BYTES,
        # waitress refuses far bigger bodies itself (plain text 413) before buffering them; the
        # API's own limit (a JSON 413, chunked bodies included) is goalhub.api.payload's.
        "max_request_body_size": 16 * config.settings().MAX_BODY_BYTES,
        "asyncore_use_poll": True,  # select() breaks beyond 1024 descriptors
        "ident": "goalhub",
        "expose_tracebacks": False,
    }


def serve_socket(sock: socket.socket, threads: int, ready: int | None = None) -> None:
    """Serve the API on an already-listening socket in this process; blocks until SIGINT (stop
    now), or SIGTERM or SIGHUP (drain, then stop). ``ready``: a pipe written to once the app is built."""
    # Deferred: each forked child imports waitress and builds its app (Flask, the blueprints,
    # the plugins) after the fork, never the parent.
    import waitress

    from goalhub.api.app import create_app

    app = create_app()
    server = waitress.create_server(app, sockets=[sock], **waitress_options(threads))
    liveview.start("api")

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # waitress's loop closes the server on SystemExit

    def begin_drain(signum: int, frame: Any) -> None:
        # Once (drain.start): a service manager signals the whole group and the pre-fork parent
        # forwards it too. SIGTERM: a load balancer is given GOALHUB_DRAIN_DELAY to see /readyz at
        # 503; SIGHUP (a reload): the parent's new child serves the same socket already, so
        # neither the 503 nor the delay.
        stopping = signum == signal.SIGTERM
        drain.start(server, config.settings().DRAIN_DELAY if stopping else 0.0,
                    config.settings().SHUTDOWN_GRACE, announce=stopping)  # then SIGINT: stop

    signal.signal(signal.SIGTERM, begin_drain)
    signal.signal(signal.SIGHUP, begin_drain)
    signal.signal(signal.SIGINT, stop)
    if ready is not None:
        with contextlib.suppress(OSError):  # nobody waits for it (not a reload)
            os.write(ready, b"1")
        os.close(ready)
    try:
        with contextlib.suppress(SystemExit):
            server.run()
    finally:
        liveview.withdraw()
        tracing.shutdown()  # this process ends with os._exit: its last spans are exported now


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 2, threads: int = 4) -> None:
    """Serve the API with waitress (``workers`` processes of ``threads`` threads each); blocks."""
    run(host=host, port=port, workers=workers, threads=threads)


def run(host: str, port: int, workers: int, threads: int = 4) -> None:
    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be at least 1")
    logs.configure("api")
    tracing.configure("api")  # before forking: the SDK imported once, the children inherit it
    auth.check_keys()  # a bad key file, or production without keys: refused before listening
    sock = listen(host, port)
    log.info("goalhub API listening on %s:%s (%d processes x %d threads)", host, port, workers, threads)
    _Prefork(sock, workers, threads).run()


class _Prefork:
    """The parent of the serving processes: forks them, replaces one that dies, replaces them
    all one at a time on SIGHUP (a reload), stops them all on SIGTERM/SIGINT."""

    def __init__(self, sock: socket.socket, workers: int, threads: int) -> None:
        self.sock = sock
        self.workers = workers
        self.threads = threads
        self.children: dict[int, float] = {}  # pid -> started (monotonic)
        self.stopping = False
        self.reloading = False
        # What this interpreter read at its start: a child reads the .pth files added since
        # (a plugin installed editable after `goalhub serve` started, then a reload).
        self.path_files = plugins.path_files()

    def spawn(self) -> tuple[int, int]:
        """Fork a serving process; returns its pid and a pipe readable once its app is built."""
        readable, writable = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            metrics.prefork_parent = os.getppid()  # /metrics reports its siblings too
            code = 0
            try:
                os.close(readable)
                _die_with(parent)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                plugins.read_path_files_since(self.path_files)
                serve_socket(self.sock, self.threads, ready=writable)
            except BaseException:  # noqa: BLE001  (a child reports and exits; the parent replaces it)
                log.exception("API process failed")
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(writable)
        self.children[pid] = time.monotonic()
        log.info("API process %d started", pid)
        return pid, readable

    def run(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            self.stopping = True

        def reload(signum: int, frame: Any) -> None:
            self.reloading = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        for _ in range(self.workers):
            os.close(self.spawn()[1])
        backoff = 0.5
        while not self.stopping:
            if self.reloading:
                self.reloading = False
                self.reload()
                continue
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid and pid in self.children:
                lived = time.monotonic() - self.children.pop(pid)
                metrics.process_dead(pid)
                if self.stopping:
                    break
                backoff = 0.5 if lived > 30 else min(backoff * 2, 10)
                log.warning("API process %d exited (status %d) after %.1f s; replacing it in %.1f s",
                            pid, status, lived, backoff)
                time.sleep(backoff)
                if not self.stopping:
                    os.close(self.spawn()[1])
                continue
            time.sleep(0.1)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # each drains (goalhub.drain), then exits
        deadline = time.monotonic() + config.settings().DRAIN_DELAY + config.settings().SHUTDOWN_GRACE + 5
        while self.children and time.monotonic() < deadline:
            for pid in list(self.children):
                with contextlib.suppress(ChildProcessError):
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done:
                        self.children.pop(pid, None)
            time.sleep(0.05)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.sock.close()

    def reload(self) -> None:
        """Replace every serving process, one at a time: the new one is serving before the old
        one drains, so the API answers throughout. A new one that fails to start ends the reload
        with the old ones still serving."""
        old = list(self.children)
        log.info("reloading %d API process(es) one at a time", len(old))
        for retiring in old:
            pid, ready = self.spawn()
            started = _readable(ready, timeout=120)
            os.close(ready)
            if not started:
                log.error("API process %d did not start; reload stopped, the others keep serving", pid)
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(retiring, signal.SIGHUP)  # drain: finish what it holds, then exit
            self._reap(retiring, timeout=config.settings().SHUTDOWN_GRACE + 5)
            if self.stopping:
                return
        log.info("reloaded %d API process(es)", len(old))

    def _reap(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.pop(pid, None)
        metrics.process_dead(pid)


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """A serving process dies with the parent that forked it (Linux): a parent killed with
    ``kill -9`` leaves no orphan answering on its socket while its replacement starts."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` gave a byte within ``timeout`` (EOF first: its writer died)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) == b"1"
