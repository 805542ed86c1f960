"""Graceful drain of an API process on SIGTERM (issue 24): no request in flight is lost.

A process told to stop (SIGTERM from systemd, ``goalhub up``, the pre-fork parent):

1. turns ``/readyz`` to 503 ``draining`` at once, so a load balancer that checks it stops
   sending new requests here, and keeps serving for ``GOALHUB_DRAIN_DELAY`` seconds while it
   notices (requests keep arriving meanwhile and are served);
2. stops accepting connections (new ones wait in the listening socket's backlog for the
   other processes sharing it, or are refused once every process sharing it has stopped,
   which a proxy retries on another upstream: a refused connect never reached a server);
3. closes each keep-alive connection as soon as it is idle, lets every request already read
   finish and its answer be sent, and exits once no connection is left, or after
   ``GOALHUB_SHUTDOWN_GRACE`` seconds, whichever comes first.

A reload's drain (SIGHUP from the pre-fork parent, once its replacement serves the same
socket) skips step 1's 503 and its delay: the machine is not going away, and a load balancer
that saw ``/readyz`` at 503 would take all of it out of rotation. In step 3 a connection counts
as idle once nothing has been read or written on it for ``QUIET`` seconds: one accepted a
moment ago whose request has not arrived yet is served, not closed under its client.

A SIGTERM while draining only turns ``/readyz`` to 503 if it was not (systemd may signal the
whole group, and the pre-fork parent forwards it again); SIGINT stops at once. Only the waitress
loop (``goalhub.api.server``) uses this module; ``/readyz`` asks ``draining()``.
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

QUIET = 1.0  # seconds without a byte read or written before a connection counts as idle
_draining = threading.Event()  # /readyz answers 503
_started = threading.Event()  # a drain runs (once per process)


def draining() -> bool:
    """Whether this process is draining: ``/readyz`` answers 503."""
    return _draining.is_set()


def _listeners_and_channels(server: Any) -> tuple[list[Any], list[Any]]:
    # Imported here: waitress is the API server's dependency; nothing else loads this module.
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer

    dispatchers = list(server._map.values())
    return ([d for d in dispatchers if isinstance(d, BaseWSGIServer)],
            [d for d in dispatchers if isinstance(d, HTTPChannel)])


def _idle(channel: Any, now: float) -> bool:
    """Nothing read that is not answered, nothing left to send, and quiet for ``QUIET`` s."""
    return (not channel.requests and getattr(channel, "request", None) is None
            and not channel.total_outbufs_len and now - channel.last_activity >= QUIET)


def drain(server: Any, delay: float, grace: float, poll: float = 0.05, *, announce: bool = True) -> bool:
    """Steps 1-3 above for a waitress server (its loop runs in another thread); ``announce``
    False for a reload's drain. Returns True when every connection was answered and closed,
    False when the grace ran out first."""
    if announce:
        log.info("draining: /readyz answers 503; accepting for %.1f s more, then finishing in-flight requests "
                 "within %.1f s", delay, grace)
        time.sleep(delay)
    else:
        log.info("draining for a reload: accepting no more (the new processes serve this socket), finishing "
                 "in-flight requests within %.1f s", grace)
    listeners, _ = _listeners_and_channels(server)
    for listener in listeners:
        listener.accepting = False  # its readable() turns False: the loop no longer accepts
    deadline = time.monotonic() + grace
    while True:
        _, channels = _listeners_and_channels(server)
        now = time.time()  # waitress's last_activity is wall-clock time
        for channel in channels:
            if _idle(channel, now):
                channel.will_close = True  # the loop closes it on its next pass
        if not channels:
            log.info("drained: every request answered")
            return True
        if time.monotonic() > deadline:
            log.warning("drain grace of %.1f s ran out with %d connection(s) open", grace, len(channels))
            return False
        for listener in listeners:
            listener.trigger.pull_trigger()  # wake the loop to act on will_close
        time.sleep(poll)


def start(server: Any, delay: float, grace: float, *, announce: bool = True) -> threading.Thread | None:
    """Drain in a thread (once per process), then interrupt the main thread (the waitress loop),
    whose SIGINT handler stops the server. ``announce``: turn ``/readyz`` to 503 at once (the
    process is going away); False for a reload's drain. A second call only announces."""
    if announce:
        _draining.set()  # at once, in the signal handler
    if _started.is_set():
        return None
    _started.set()

    def run() -> None:
        try:
            drain(server, delay, grace, announce=announce)
        finally:
            _thread.interrupt_main()

    thread = threading.Thread(target=run, name="goalhub-drain", daemon=True)
    thread.start()
    return thread
