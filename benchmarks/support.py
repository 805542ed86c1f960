"""What the benchmarks share: a throw-away goalhub stack, child processes, statistics, tables.

Every benchmark runs against a temporary ``GOALHUB_HOME`` with its own embedded Redis and
embedded store, started and stopped here, so a developer's ``.goalhub`` is never touched.
Each script prints Markdown tables on stdout (progress goes to stderr) and, with
``--json PATH``, writes its headline figures for ``run.py``'s combined table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))  # run from a checkout even where goalhub is not installed

from goalhub import connection, plugins, store, testing  # noqa: E402
from goalhub.testing import ChildProcess  # noqa: E402

# The real plugin distributions, by entry-point name.
REAL_PLUGINS = ("exclusive", "show", "karaoke", "snapshot", "analytics", "livestream")
STREAMER = "6800a9073e0c346531958b03"  # the sub of seed 000's token


def send_events(batch: list[dict[str, Any]], event: str = "goal.created") -> float:
    """An RQ job (bench_dispatch): send ``event`` for each arguments of ``batch`` from inside the
    job, so that its receivers run inline; returns microseconds per event."""
    from goalhub.signals import EVENTS

    signal = EVENTS[event][0]
    start = time.perf_counter()
    for arguments in batch:
        signal.send(event, **arguments)
    return (time.perf_counter() - start) / len(batch) * 1e6


def epoch(moment: datetime) -> float:
    """An RQ job's naive UTC time (``enqueued_at``, ``started_at``, ``ended_at``) in epoch seconds."""
    return moment.replace(tzinfo=UTC).timestamp()


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --- statistics ---------------------------------------------------------------------------


@dataclass
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        values = list(values)
        return cls(statistics.median(values), min(values), max(values))

    def fmt(self, digits: int = 1) -> str:
        return f"{self.median:,.{digits}f} [{self.low:,.{digits}f} - {self.high:,.{digits}f}]"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- output -------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """A Markdown table (readable as plain text too)."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class Headline:
    """One row of run.py's combined table."""

    benchmark: str
    measure: str
    goalhub: str
    baseline: str
    ratio: str


def arguments(description: str | None, interval: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    parser.add_argument("--json", type=Path, help="write the headline figures to this file (for run.py)")
    if interval:
        parser.add_argument("--interval", type=float, help="GOALHUB_SCHEDULER_INTERVAL for this run (default: goalhub's)")
    return parser.parse_args()


def write_headlines(path: Path | None, headlines: list[Headline]) -> None:
    if path:
        path.write_text(json.dumps([asdict(h) for h in headlines], indent=1))


# --- a throw-away stack -------------------------------------------------------------------


@contextmanager
def temporary_home(load_plugins: Sequence[str] = (), disabled: Sequence[str] = ()) -> Iterator[Path]:
    """A fresh GOALHUB_HOME with its own embedded Redis and embedded store, set in this process's
    environment (children inherit it) and removed afterwards, Redis stopped."""
    saved = dict(os.environ)
    home = Path(tempfile.mkdtemp(prefix="goalhub-bench-"))
    # Nothing of the developer's configuration leaks in: no real store, Redis or outbound service.
    for name in [n for n in os.environ if n.startswith("GOALHUB_")]:
        del os.environ[name]
    os.environ["GOALHUB_HOME"] = str(home)
    # The abuse limits (per-user rates, open goals per session) are off: one benchmark client
    # creates thousands of goals for one streamer, which they exist to refuse.
    os.environ.update(GOALHUB_RATE_LIMIT_GOALS="off", GOALHUB_RATE_LIMIT_SESSIONS="off", GOALHUB_MAX_OPEN_GOALS="0")
    os.environ["GOALHUB_LOAD_PLUGINS"] = ",".join(load_plugins)
    if disabled:
        os.environ["GOALHUB_DISABLED_PLUGINS"] = ",".join(disabled)
    store.reset()
    plugins.reset()
    try:
        socket_path = connection.ensure_embedded_redis(home)
        os.environ["GOALHUB_REDIS_URL"] = f"unix://{socket_path}?db=0"
        yield home
    finally:
        connection.stop_embedded_redis(home)
        store.reset()
        plugins.reset()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(home, ignore_errors=True)


def child_env() -> dict[str, str]:
    """This process's environment for a child, with ``support`` importable (the floor's job)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_child(name: str, code: str, home: Path) -> ChildProcess:
    """A goalhub process (worker, scheduler, API) whose output goes to a log file in the home."""
    return ChildProcess(name, code, child_env(), home, cwd=ROOT)


@contextmanager
def children(*started: ChildProcess) -> Iterator[list[ChildProcess]]:
    running = list(started)
    try:
        yield running
    finally:
        for child in running:
            child.stop()


def start_workers(count: int, home: Path, tag: str = "w", simple: bool = False) -> list[ChildProcess]:
    """``count`` real RQ workers (``goalhub.worker.run_worker``), forking unless ``simple``; waits until
    each has registered."""
    from rq import Worker

    from goalhub.connection import get_redis

    before = {w.name for w in Worker.all(connection=get_redis())}
    started = [
        start_child(f"worker-{tag}{i}", f"from goalhub.worker import run_worker; run_worker(name='bench-{tag}{i}-{time.time_ns()}', "
                                  f"logging_level='WARNING', simple={simple})", home)
        for i in range(count)
    ]
    wait_for(lambda: len({w.name for w in Worker.all(connection=get_redis())} - before) >= count,
             what=f"{count} worker(s) to register", children_=started)
    return started


def start_pool(count: int, home: Path, tag: str = "p") -> list[ChildProcess]:
    """One ``goalhub worker --pool count`` (``goalhub.pool.run_pool``): ``count`` non-forking workers
    under one parent; waits until each has registered."""
    from rq import Worker

    from goalhub.connection import get_redis

    before = {w.name for w in Worker.all(connection=get_redis())}
    started = [start_child(f"pool-{tag}", f"from goalhub.pool import run_pool; run_pool({count}, logging_level='WARNING')",
                           home)]
    wait_for(lambda: len({w.name for w in Worker.all(connection=get_redis())} - before) >= count,
             what=f"a pool of {count} worker(s) to register", children_=started)
    return started


def process_tree(pids: Iterable[int]) -> list[Any]:
    """The processes ``pids`` and every descendant of theirs (``psutil.Process``), those gone left out."""
    import psutil

    tree = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return tree


def memory(started: Sequence[ChildProcess]) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over the processes and every descendant (a pool's workers, a forking
    worker's horse). RSS counts a page shared by forked processes once per process; PSS divides it
    among them: the memory the processes really take together."""
    import psutil

    rss = pss = 0
    for process in process_tree(child.popen.pid for child in started):
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


def start_scheduler(home: Path) -> ChildProcess:
    return start_child("scheduler", "from goalhub.scheduler import run_scheduler; run_scheduler()", home)


def start_api(home: Path, workers: int = 2, threads: int = 4) -> tuple[ChildProcess, str]:
    """``goalhub.api.serve`` (waitress) on 127.0.0.1 and a free port; returns it and its base URL."""
    server, base = testing.start_api(child_env(), home, workers=workers, threads=threads, cwd=ROOT)
    # the API answers once one process is up; give the others a moment to boot too.
    time.sleep(1.0)
    return server, base


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05, what: str = "condition",
             children_: Sequence[ChildProcess] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for child in children_:
            if child.popen.poll() is not None:
                raise RuntimeError(f"{child.name} exited while waiting for {what}:\n{child.output()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def machine() -> str:
    import platform

    return (f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


# --- store fixtures -----------------------------------------------------------------------


def new_session(db: Any, user: str = STREAMER, sources: int = 1) -> str:
    """An active live session of ``user`` with ``sources`` RTC sources, written directly (not timed)."""
    from bson import ObjectId

    _id = ObjectId()
    db.sessions.insert_one({
        "_id": _id, "user": user, "active": True,
        "sources": [{"room_id": f"room-{_id}", "task_id": f"task-{i}"} for i in range(sources)],
        "exclusive_goal_pairs": {}, "show_goal_pairs": [], "started_at": time.time(),
    })
    return str(_id)


def ended_trigger_exclusive(db: Any, session_id: str, user: str = STREAMER) -> str:
    """A TriggerExclusiveGoal of the session whose countdown has ended, as the lifecycle leaves it."""
    from bson import ObjectId

    _id = ObjectId()
    now = time.time()
    gid = str(_id)
    db.goals.insert_one({
        "_id": _id, "_cls": "TriggerExclusiveGoal", "active": False,
        "conditions": {"session_id": session_id, "exclusive_to": gid},
        "levels": [{"target": 60}], "nbf": now - 120, "exp": now - 60,
        "context": {"type": "trigger_exclusive", "session_id": session_id, "exclusive_to": gid},
        "metadata": {"user_id": user}, "created_at": now - 120, "activated_at": now - 120,
        "ended_at": now - 60, "end_reason": "expired",
    })
    db.sessions.update_one({"_id": ObjectId(session_id)},
                           {"$set": {f"exclusive_goal_pairs.{gid}.trigger_exclusive_goal": gid}})
    return gid
