"""A receiver's time budget, nested inside RQ's own job timeout.

RQ stops a job that runs past its timeout with ``UnixSignalDeathPenalty``: ``SIGALRM``
through ``signal.alarm`` in the work-horse. A receiver's budget uses the same timer
(``ITIMER_REAL``; ``alarm`` and ``setitimer`` share it), so it is nested deliberately:

- on entry the outer alarm's remaining time and handler are saved, and the timer is set to
  the budget, or to the outer remaining time less ``MARGIN`` when that comes first: the
  receiver is stopped (and recorded) before the job's own timeout would kill the whole job;
- on exit the timer is disarmed, the outer handler put back and the outer alarm re-armed
  with what is left of it, so RQ's timeout still fires at the same moment.

Overrunning raises ``ReceiverTimeout``, or RQ's ``JobTimeoutException`` itself when it was the
job's timeout that cut the receiver short. Both are ``JobTimeoutException``s. Outside the main
thread (a threaded server) signals cannot be used, and the budget is not enforced there.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rq.exceptions import StopRequested
from rq.timeouts import BaseTimeoutException, JobTimeoutException

# What is kept of the job's own timeout for recording a receiver stopped at it.
MARGIN = 0.25
# The least time a receiver gets when the job has almost none left.
MINIMUM = 0.01
# The least job time left, beyond MARGIN, for an inline receiver to start at all
# (``goalhub.dispatch`` gives it its own job otherwise).
START = 0.5


class ReceiverTimeout(JobTimeoutException):
    """A receiver ran over its time budget."""


def raise_if_stop(exc: BaseException) -> None:
    """Raise ``exc`` again if a signal handler raised it to stop the work in hand: RQ's job
    timeout or a receiver's budget (``SIGALRM``), RQ's ``StopRequested`` (``SIGTERM``). They
    are ``Exception``s, so an ``except Exception`` where the signal lands swallows them (a job
    runs past its timeout, a worker never stops); such a clause calls this first."""
    if isinstance(exc, (BaseTimeoutException, StopRequested)):
        raise exc


def time_to_start() -> bool:
    """Whether the job has time left to start a receiver inline: ``START`` seconds beyond
    ``MARGIN`` before its own timeout (RQ's alarm). True when no alarm is armed or this is not
    the main thread (no timeout can cut the receiver here)."""
    if threading.current_thread() is not threading.main_thread():
        return True
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    return not left or left >= START + MARGIN


@contextmanager
def limit(seconds: float | None, what: str = "receiver") -> Iterator[None]:
    """Stop the block with ``ReceiverTimeout`` after ``seconds`` (None or 0: no budget)."""
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    allowed = float(seconds)
    exception: JobTimeoutException = ReceiverTimeout(f"{what} ran over its budget of {seconds:g} s")
    if outer_left and outer_left - MARGIN < allowed:
        allowed = max(outer_left - MARGIN, MINIMUM)
        exception = JobTimeoutException(f"{what} stopped {MARGIN:g} s before the job's timeout, "
                                        f"after {allowed:.2f} s (its budget: {seconds:g} s)")
    armed = True

    def expire(signum: int, frame: Any) -> None:
        if armed:
            raise exception

    began = time.monotonic()
    outer_handler = signal.signal(signal.SIGALRM, expire)  # the handler it replaces: put back on exit
    signal.setitimer(signal.ITIMER_REAL, allowed)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left:
            # The job's own alarm, re-armed with what is left of it (at once if nothing is).
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - began), MINIMUM / 10))
