"""Prometheus metrics, in prometheus-client's multiprocess mode.

Every goalhub process (the API processes, RQ workers and their forked work-horses, the
scheduler) writes its samples to files under one directory, ``PROMETHEUS_MULTIPROC_DIR``:
``GOALHUB_METRICS_DIR``, else ``<GOALHUB_HOME>/metrics``, chosen when the process first
records a sample and inherited by what it starts. ``/metrics`` (``goalhub.api.metrics``)
adds them up at each scrape, with the gauges read from Redis then (queue depth, scheduled
jobs, the scheduler's last poll).

prometheus-client writes one file per process and kind (``counter_<pid>.db``...). A pool
worker (``goalhub worker --pool``) runs job after job in one process and writes its samples
itself, into one pair of files for its whole life. A forking worker runs every job in a new
process. A work-horse therefore does not write its
samples itself (a new process opens new files and writes every labelled value into them
anew: about 5 ms a goal): it appends them to a page of memory it shares with its worker
(``handoff_start``, before the fork), and the worker, which keeps its files open for its
whole life, records them once the horse has exited (``handoff_collect``), however it ended.
A sample that does not fit on the page is written by the horse itself, as before, and so is
any sample of a process that is not the worker's own child (a horse whose worker died meanwhile,
a process a job started); samples on the page of a worker killed mid-job are lost with it.

Files of other processes still come and go (API processes, the CLI, a worker that
stopped, a pool worker recycled or killed): ``compact`` (each worker runs it at its registry
maintenance) folds the counter
and histogram files of processes that are gone into one ``<kind>_archive.db`` per kind; a
scrape and a compaction never overlap (a file lock).

``registry`` is what a scrape reads (``/metrics``; ``serve``: ``goalhub worker --metrics-port``
on a machine without an API process).

Recording never raises: a metric that cannot be written is logged, the work goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import mmap
import os
import threading
from collections.abc import Iterator
from typing import Any

from goalhub import config, processes

log = logging.getLogger(__name__)

# In an API process forked by goalhub.api.server's prefork parent: that parent's pid (set there;
# /metrics then reports the process samples of its siblings too).
prefork_parent = 0

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


def multiprocess_dir() -> str:
    """The directory every process writes its samples to (set in the environment on first use)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = str(config.metrics_dir())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    return path


_made: dict[str, Any] = {}
_making = threading.Lock()


def _metrics() -> dict[str, Any]:
    """The metric objects, made once per process. Under a lock: the first requests after a
    restart reach here in several threads at once, and a second registration of the same names
    raised ``DuplicateTimeseries``, dropping that request's sample."""
    if _made:
        return _made
    with _making:
        if not _made:
            _made.update(_make())
    return _made


def _make() -> dict[str, Any]:
    multiprocess_dir()  # before prometheus_client's first import: it picks its mode then
    from prometheus_client import Counter, Histogram  # deferred: after multiprocess_dir (above), and heavy

    return {
        "goals": Counter("goalhub_goals_created", "Goals stored by create_goal", ["goal_type"]),
        "goals_failed": Counter("goalhub_goals_failed", "Accepted goals that could no longer be created",
                                ["goal_type"]),
        "outcomes": Counter("goalhub_receiver_outcomes", "Receiver runs by how they ended",
                            ["plugin", "receiver", "status"]),
        "duration": Histogram("goalhub_receiver_duration_seconds", "Time a receiver ran",
                              ["plugin", "receiver"], buckets=DURATION_BUCKETS),
        "isolated": Counter("goalhub_receivers_isolated", "Receivers isolated after overrunning their budget",
                            ["plugin", "receiver"]),
        "lateness": Histogram("goalhub_activation_lateness_seconds", "activated_at - nbf of activated goals",
                              buckets=LATENESS_BUCKETS),
        "reconciled": Counter("goalhub_reconciled", "Overdue goals the reconciler activated or ended late, lost jobs it requeued",
                              ["action"]),
        "http": Counter("goalhub_http_requests", "HTTP requests by route and status",
                        ["method", "route", "status"]),
        "http_duration": Histogram("goalhub_http_request_duration_seconds", "HTTP request handling time",
                                   ["route"], buckets=DURATION_BUCKETS),
        "store_writes": Counter("goalhub_store_writes", "Write transactions on the embedded store", ["role"]),
        "store_write_wait": Counter("goalhub_store_write_wait_seconds",
                                    "Time write transactions waited for the embedded store's one write lock", ["role"]),
        "store_write_held": Counter("goalhub_store_write_held_seconds",
                                    "Time write transactions held the embedded store's one write lock", ["role"]),
    }


def prepare() -> None:
    """Load prometheus-client now (a worker, before it forks): each work-horse would import it anew."""
    _metrics()


def _record(name: str, labels: dict[str, str] | None, method: str, value: float = 1.0) -> None:
    if _handoff is not None and os.getppid() == _handoff_owner and _hand_off([name, labels, method, value]):
        return
    try:
        key = (name, *labels.items()) if labels else (name,)
        target = _children.get(key)
        if target is None:
            metric = _metrics()[name]
            target = _children[key] = metric.labels(**labels) if labels else metric
        getattr(target, method)(value)
    except Exception as exc:
        from goalhub.budget import raise_if_stop  # deferred: it imports RQ; only a failure gets here

        raise_if_stop(exc)  # a job's timeout or a stop that landed here is not a metric's failure
        log.exception("could not record metric %s", name)


# (metric, its label values) -> the labelled child: prometheus-client's own lookup validates and
# orders the labels on every call.
_children: dict[tuple[Any, ...], Any] = {}


# --- a work-horse's samples, recorded by its worker -----------------------------------------

HANDOFF_BYTES = 64 * 1024
_LENGTH = 4  # the page starts with the length of what follows it: one JSON array per line
_handoff: mmap.mmap | None = None  # shared with the horse the worker forks next (MAP_SHARED)
_handoff_owner = 0  # the worker's pid: a process whose parent it is, is its horse
_handoff_lock = threading.Lock()


def handoff_start() -> None:
    """A forking worker, before each fork: its next horse hands its samples over on this page."""
    global _handoff, _handoff_owner
    if _handoff is None:
        _handoff = mmap.mmap(-1, HANDOFF_BYTES)
    _handoff_owner = os.getpid()
    _handoff[:_LENGTH] = bytes(_LENGTH)


def _hand_off(sample: list[object]) -> bool:
    """In a horse: append one sample to the page; False when it does not fit (or cannot be
    encoded), and the horse records it itself. The length is written after the line, so a horse
    killed mid-write leaves every earlier sample readable and no half line."""
    page = _handoff
    assert page is not None
    try:
        line = json.dumps(sample, separators=(",", ":")).encode() + b"\n"
    except (TypeError, ValueError):
        return False
    with _handoff_lock:
        used = int.from_bytes(page[:_LENGTH], "little")
        end = _LENGTH + used + len(line)
        if end > HANDOFF_BYTES:
            return False
        page[_LENGTH + used:end] = line
        page[:_LENGTH] = (used + len(line)).to_bytes(_LENGTH, "little")
        return True


def handoff_collect() -> int:
    """The worker, once its horse has exited (finished, failed or killed): record what the horse
    handed over, in the worker's own files. Returns how many samples."""
    page = _handoff
    if page is None or os.getpid() != _handoff_owner:
        return 0
    used = int.from_bytes(page[:_LENGTH], "little")
    lines = page[_LENGTH:_LENGTH + min(used, HANDOFF_BYTES - _LENGTH)].splitlines()
    page[:_LENGTH] = bytes(_LENGTH)
    for line in lines:
        try:
            name, labels, method, value = json.loads(line)
        except ValueError:
            log.warning("a work-horse handed over an unreadable metric sample")
            continue
        _record(name, labels, method, value)
    return len(lines)


def goal_created(goal_type: str) -> None:
    """A goal was created (``create_goal`` stored it)."""
    _record("goals", {"goal_type": goal_type or "unknown"}, "inc")


def goal_failed(goal_type: str) -> None:
    """An accepted goal could no longer be created (``goalhub.outbox.fail``)."""
    _record("goals_failed", {"goal_type": goal_type or "unknown"}, "inc")


def receiver_outcome(plugin: str, receiver: str, status: str, seconds: float | None = None) -> None:
    """A receiver run ended with ``status`` (ok, failed, retrying, timed out, paused, skipped)."""
    _record("outcomes", {"plugin": plugin, "receiver": receiver, "status": status}, "inc")
    if seconds is not None:
        _record("duration", {"plugin": plugin, "receiver": receiver}, "observe", max(seconds, 0.0))


def receiver_isolated(plugin: str, receiver: str) -> None:
    """A receiver overran its budget and now runs as its own job (``goalhub.slowness``)."""
    _record("isolated", {"plugin": plugin, "receiver": receiver}, "inc")


def activation(lateness_seconds: float) -> None:
    """A goal was activated ``lateness_seconds`` after its ``nbf``."""
    _record("lateness", None, "observe", max(lateness_seconds, 0.0))


def reconciled(action: str) -> None:
    """The reconciler activated (``activate``) or ended (``end``) an overdue goal late, or put
    back a job a worker died taking (``requeue``)."""
    _record("reconciled", {"action": action}, "inc")


# The method label's values: a client may send any token up to 64 KiB as a method (waitress
# takes it), and a label per value would grow the metric files without bound (issue 22).
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One request. ``route`` is the matched URL rule (``unmatched`` for none), never the raw
    path; ``method`` is one of ``HTTP_METHODS`` or ``other``: no label takes a client's text."""
    method = method if method in HTTP_METHODS else "other"
    _record("http", {"method": method, "route": route, "status": str(status)}, "inc")
    _record("http_duration", {"route": route}, "observe", seconds)


def store_writes(role: str, count: int, waited: float, held: float) -> None:
    """Write transactions on the embedded store (``goalhub.store.take_write_stats``): a job's
    (``role`` "worker"), a request's ("api"). The held seconds of every process, per second of
    wall time, are how busy its one writer is; near 1, more workers only wait longer."""
    if count:
        labels = {"role": role}
        _record("store_writes", labels, "inc", count)
        _record("store_write_wait", labels, "inc", waited)
        _record("store_write_held", labels, "inc", held)


def process_dead(pid: int) -> None:
    """An API process exited: its live gauges are dropped (counters stay)."""
    try:
        from prometheus_client import multiprocess  # deferred: heavy (see _metrics)

        multiprocess.mark_process_dead(pid, multiprocess_dir())
    except Exception:
        log.exception("could not mark API process %s dead for metrics", pid)


@contextlib.contextmanager
def _locked(shared: bool) -> Iterator[None]:
    path = os.path.join(multiprocess_dir(), ".compaction.lock")  # not *.db: the collector skips it
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def reading() -> contextlib.AbstractContextManager[None]:
    """Hold while a scrape reads the files: no compaction moves samples meanwhile."""
    return _locked(shared=True)


class _MachineCollector:
    """The samples of every process of this machine, read under the compaction lock."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client import multiprocess  # deferred: heavy (see _metrics)

        with reading():
            yield from multiprocess.MultiProcessCollector(None, path=multiprocess_dir()).collect()


def registry(*collectors: Any) -> Any:
    """A prometheus-client registry of this machine's samples, and ``collectors`` besides."""
    multiprocess_dir()
    from prometheus_client import CollectorRegistry  # deferred: after multiprocess_dir (above), and heavy

    found = CollectorRegistry()
    for collector in (_MachineCollector(), *collectors):
        found.register(collector)
    return found


def serve(host: str, port: int) -> None:
    """Serve this machine's samples for Prometheus at ``http://host:port/`` from a thread
    (``goalhub worker --metrics-port``: a machine with workers and no API process)."""
    from prometheus_client import start_http_server  # deferred: only a worker with --metrics-port needs it

    start_http_server(port, addr=host, registry=registry())
    log.info("serving this machine's metrics on %s:%d", host, port)


def compact() -> int:
    """Fold the counter and histogram files of processes that are gone (finished work-horses,
    stopped processes) into ``counter_archive.db`` and ``histogram_archive.db``: the totals a
    scrape adds up stay the same, the files do not pile up. Returns how many were folded."""
    from prometheus_client.mmap_dict import MmapedDict  # deferred: heavy (see _metrics)

    directory = multiprocess_dir()
    folded = 0
    with _locked(shared=False):
        for kind in ("counter", "histogram"):
            dead = [path for path in glob.glob(os.path.join(directory, f"{kind}_*.db"))
                    if (ident := os.path.basename(path)[len(kind) + 1:-3]).isdigit() and processes.gone(int(ident))]
            if not dead:
                continue
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
            try:
                for path in dead:
                    for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):
                        current, _ = archive.read_value(key)
                        archive.write_value(key, current + value, timestamp)
                    os.remove(path)
                    folded += 1
            finally:
                archive.close()
    return folded
