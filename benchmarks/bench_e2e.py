"""End to end: exclusive goals per second from ``POST /goals?type=exclusive`` (202) to the last
receiver's outcome, on a pool of non-forking workers and on forking workers, against a plain
forking ``rq worker --burst`` draining no-op jobs (the floor), measured alternately in the same run.

    python benchmarks/bench_e2e.py [--quick] [--json PATH]

A temporary GOALHUB_HOME with its own embedded Redis and embedded store; the real API server
(``goalhub.api.serve``: waitress, 2 processes x 4 threads) on 127.0.0.1, the rq-scheduler, the
real installed plugins (exclusive, show, karaoke, snapshot, analytics, livestream), and the
workers: a pool of 1 then 2 non-forking workers (``goalhub worker --pool N``: ``goalhub.pool``),
then 1 then 2 real forking workers (``goalhub.worker.run_worker``). Each exclusive goal needs an active
session of the caller and a TriggerExclusiveGoal whose countdown has ended: both are written
to the store before the clock starts. Then, per worker count:

- the plain floor: a plain ``rq worker --burst`` (RQ's own CLI, one forking worker, no goalhub)
  drains M ``time.time`` jobs from the same Redis (jobs/s, from the first job's start to the
  last one's end), right before each throughput run; for N = 2, also 2 plain ``rq worker
  --burst`` processes draining them together, and RQ's own ``rq worker-pool -n 2 --burst``
  (forking workers under one parent), the better of the two. The issue's measure is goals/s per worker
  process against the plain floor per process of as many plain workers, per triple of runs
  (goal: 1.2x on the pool): its "0.39 with 2" forking workers was taken against 2 workers
  draining together (142 jobs/s, 71 per worker). N = 2 is also shown against one plain worker
  alone, which has the cores to itself (stricter);
- the workers' own floor: the same workers drain M no-op RQ jobs (``goalhub.worker.noop``,
  imported before forking), also before each throughput run; the forking worker's must be
  within 2x of the plain floor (else every figure measured against it would mislead);
- throughput: G exclusive goals POSTed by 4 client threads as fast as the API takes them;
  goals/s from the first POST to the last receiver outcome; jobs/s over every RQ job the goals
  caused (create_goal, and any receiver job, activation or analytics task), counted in RQ's
  finished and failed registries; goals/s per worker against the floor's jobs/s;
- latency at half the measured throughput, for ~10 s, evenly paced; p50/p95 from each POST to
  that goal's last receiver outcome;
- CPU: during each throughput run, the CPU seconds of every process (the API server, the workers,
  Redis, the scheduler, and this process's client threads), per goal; during each plain floor,
  the CPU seconds of the plain workers (``wait4``: with their horses; less their start, measured
  on an empty queue) and of Redis, per no-op job.
  When everything shares the machine's cores, goals/s cannot pass cores / (CPU per goal): this
  says what a goal costs the whole machine against what a plain no-op job does;
- memory: RSS and PSS summed over the workers' processes (a pool's parent and its workers, a
  forking worker and its horse), idle after a warm-up and at the peak of the throughput runs
  (sampled every 0.1 s), for 1, 2 and 4 workers of each kind (4: one throughput run only).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import support
from support import Headline, Spread

FINAL = ("ok", "failed", "skipped")
CLIENT_THREADS = 4


def rq_job_ids() -> set[str]:
    """Ids of every job RQ finished or failed so far, on goalhub's queues."""
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    from goalhub.queues import all_queues

    ids: set[str] = set()
    for queue in all_queues():
        for registry in (FinishedJobRegistry(queue=queue), FailedJobRegistry(queue=queue)):
            ids.update(registry.get_job_ids())
    return ids


def rq_idle() -> bool:
    from rq.registry import ScheduledJobRegistry, StartedJobRegistry

    from goalhub.queues import all_queues

    return all(q.count == 0 and StartedJobRegistry(queue=q).count == 0 and ScheduledJobRegistry(queue=q).count == 0
               for q in all_queues())


def fetch_jobs(ids: set[str]) -> list[Any]:
    """The RQ jobs of ``ids`` that still exist, in one read."""
    from rq.job import Job

    from goalhub.connection import get_redis

    return [j for j in Job.fetch_many(sorted(ids), connection=get_redis()) if j is not None]


def job_times(jobs: list[Any]) -> tuple[float, float, int]:
    """(first start, last end, failed count) of the jobs, epoch seconds."""
    starts = [support.epoch(j.started_at) for j in jobs if j.started_at]
    ends = [support.epoch(j.ended_at) for j in jobs if j.ended_at]
    failed = sum(1 for j in jobs if j.get_status(refresh=False) == "failed")
    return min(starts), max(ends), failed


def floor_run(jobs: int) -> float:
    """No-op jobs per second drained by the running workers."""
    from goalhub.queues import get_queue
    from goalhub.worker import noop

    before = rq_job_ids()
    queue = get_queue()
    for _ in range(jobs):
        queue.enqueue(noop)
    support.wait_for(lambda: len(rq_job_ids() - before) >= jobs and rq_idle(), timeout=120, what="the no-op jobs")
    first, last, failed = job_times(fetch_jobs(rq_job_ids() - before))
    assert failed == 0, "a no-op job failed"
    return jobs / (last - first)


def plain_rq_floor(jobs: int, home: Path, workers: int = 1, pool: bool = False) -> tuple[float, float]:
    """No-op jobs per second of ``workers`` plain forking RQ workers (RQ's own CLI, no goalhub)
    on the same Redis, on a queue of their own; the job is ``time.time``, imported by every
    worker. ``workers`` ``rq worker --burst`` processes started together, or with ``pool`` one
    ``rq worker-pool -n workers --burst`` (RQ's pool of forking workers, forked from one
    parent). Per worker process: divide by ``workers``. The rate is the higher of the whole
    run's (first job's start to last job's end) and the one while every worker drained. Also
    the CPU milliseconds per job of the workers (their horses included) and Redis together,
    without the workers' start."""
    import os
    import subprocess
    import sys

    from rq import Queue
    from rq.registry import FinishedJobRegistry

    from goalhub.connection import embedded_redis_pid, get_redis, redis_url

    queue = Queue("bench-plain-rq", connection=get_redis())
    before = set(FinishedJobRegistry(queue=queue).get_job_ids())
    for _ in range(jobs):
        queue.enqueue(time.time)
    rq = str(Path(sys.executable).with_name("rq"))
    redis = {"redis": [embedded_redis_pid(home) or 0]}
    commands = ([[rq, "worker-pool", "-n", str(workers), "--burst", "-l", "WARNING"]] if pool
                else [[rq, "worker", "--burst", "--logging_level", "WARNING"]] * workers)

    def run(name: str) -> float:
        """CPU seconds of the commands draining queue ``name`` (wait4: the exit status and the
        CPU of each process and of what it reaped: horses, a pool's workers)."""
        started = [subprocess.Popen([*command, "--url", redis_url(), name], cwd=home,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for command in commands]
        cpu = 0.0
        for process in started:
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            assert process.returncode == 0, "a plain rq worker failed"
            cpu += usage.ru_utime + usage.ru_stime
        return cpu

    # Their start (Python, rq, click: about 0.23 s of CPU a process here), measured on an empty
    # queue and taken out: the rate leaves it out too (first job's start to last job's end).
    start = run("bench-plain-rq-empty")
    redis_before = cpu_seconds(redis)["redis"]
    cpu = run(queue.name) - start + cpu_seconds(redis)["redis"] - redis_before
    ran = fetch_jobs(set(FinishedJobRegistry(queue=queue).get_job_ids()) - before)
    first, last, failed = job_times(ran)
    assert len(ran) == jobs and failed == 0, "the plain rq workers did not run every no-op job"
    return max(jobs / (last - first), _while_all_drain(ran)), max(cpu, 0.0) * 1000 / jobs


def _while_all_drain(jobs: list[Any]) -> float:
    """Jobs per second while every plain worker drained (from the last one's first job to the
    first one's last): the floor at its best, should one worker start late or end early."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for job in jobs:
        if job.started_at and job.ended_at:
            spans.setdefault(job.worker_name or "", []).append((support.epoch(job.started_at), support.epoch(job.ended_at)))
    low = max(min(start for start, _ in runs) for runs in spans.values())
    high = min(max(end for _, end in runs) for runs in spans.values())
    inside = sum(1 for runs in spans.values() for start, end in runs if low <= start and end <= high)
    return inside / (high - low) if high > low and inside else 0.0


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role's processes and their descendants:
    the live ones read one by one, the ones that ended (a forking worker's horses) through their
    parent's counts of its reaped children."""
    import psutil

    used = {}
    for role, roots in pids.items():
        used[role] = 0.0
        for process in support.process_tree(roots):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            used[role] += times.user + times.system + times.children_user + times.children_system
    return used


class Client:
    """POSTs exclusive goals over one kept-alive ``http.client`` connection per thread: the load
    generator shares the cores with the system it measures, and ``requests`` took 2.2-2.5 ms of
    CPU per POST where ``http.client`` takes about a third of that."""

    def __init__(self, base: str, token: str):
        parts = urllib.parse.urlsplit(base)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._local = threading.local()
        self.cpu = 0.0  # CPU seconds of the client threads in ``post``: the caller's share of a goal
        self._cpu_lock = threading.Lock()

    def _send(self, body: bytes) -> tuple[int, bytes]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        connection.request("POST", f"{self.path}/goals?type=exclusive", body=body, headers=self.headers)
        response = connection.getresponse()
        return response.status, response.read()

    def post(self, session_id: str, trigger_id: str) -> tuple[str, float]:
        body = json.dumps({"levels": [{"target": 300}], "context": {"session_id": session_id, "trigger_exclusive_goal_id": trigger_id},
                           "nbf": round(time.time(), 3)}).encode()
        sent, clock = time.time(), time.thread_time()
        try:
            status, data = self._send(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed this kept-alive connection while it sat idle: sent once more on a
            # new one (were it taken twice, the extra goal would add load; settle waits for these ids).
            self._local.connection.close()
            self._local.connection = None
            status, data = self._send(body)
        with self._cpu_lock:
            self.cpu += time.thread_time() - clock
        if status != 202:
            raise RuntimeError(f"POST /goals?type=exclusive: {status} {data[:300]!r}")
        return json.loads(data)["goal_id"], sent


def prepare(db: Any, count: int) -> list[tuple[str, str]]:
    """``count`` (session, ended trigger goal) pairs, one session each, written directly to the store."""
    pairs = []
    for _ in range(count):
        session_id = support.new_session(db)
        pairs.append((session_id, support.ended_trigger_exclusive(db, session_id)))
    return pairs


def settle(db: Any, goal_ids: list[str], receivers: int, timeout: float = 300) -> dict[str, float]:
    """Wait until every goal has a final outcome from every goal.created receiver; returns each
    goal's last receiver finish time."""
    wanted = len(goal_ids) * receivers

    def done() -> bool:
        # RQ's queues and registries first (a few Redis round trips): while a job is queued or
        # running, not every outcome is final. The count reads every outcome of the goals (about
        # 40 ms for 300 goals): asked four times a second throughout the run, it took 3.5-6 ms of
        # CPU per goal from the cores the system under test shares, where the plain floor's wait
        # (wait4) takes none.
        return rq_idle() and db.outcomes.count_documents(
            {"event": "goal.created", "goal_id": {"$in": goal_ids}, "status": {"$in": list(FINAL)}}) >= wanted

    support.wait_for(done, timeout=timeout, interval=0.25, what=f"{len(goal_ids)} goals to settle")
    last: dict[str, float] = {}
    failures = []
    for outcome in db.outcomes.find({"event": "goal.created", "goal_id": {"$in": goal_ids}}):
        if outcome["status"] == "failed":
            failures.append(f"{outcome['_id']}: {outcome.get('error')}")
        if outcome["status"] != "skipped":
            last[outcome["goal_id"]] = max(last.get(outcome["goal_id"], 0.0), outcome["finished_at"])
    if failures:
        print(f"!!! {len(failures)} receiver outcomes FAILED, e.g. {failures[0]}")
    return last


def throughput_run(db: Any, client: Client, goals: int, receivers: int,
                   pids: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """G goals as fast as the API takes them; with ``pids`` (role -> process), also the CPU
    milliseconds per goal of each role, and of the client threads, from the first POST until
    every goal settled."""
    pairs = prepare(db, goals)
    before = rq_job_ids()
    writes_before = store_writes()
    cpu_before, client_before = cpu_seconds(pids or {}), client.cpu
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        posted = list(pool.map(lambda pair: client.post(*pair), pairs))
    posted_in = time.time() - start
    last = settle(db, [gid for gid, _ in posted], receivers)
    cpu = {role: (used - cpu_before[role]) * 1000 / goals for role, used in cpu_seconds(pids or {}).items()}
    cpu["client"] = (client.cpu - client_before) * 1000 / goals
    support.wait_for(rq_idle, timeout=120, interval=0.1, what="the queues to drain")
    ran = rq_job_ids() - before
    _, last_job, failed = job_times(fetch_jobs(ran))
    if failed:
        print(f"!!! {failed} RQ jobs FAILED during a throughput run")
    writes = {key: used - writes_before.get(key, 0.0) for key, used in store_writes().items()}
    return {
        "goals_per_s": goals / (max(last.values()) - start),
        # Stricter: until every job the goals caused has ended (the analytics tasks too, which run
        # after the create jobs queued before them, once the last outcome is already final).
        "all_jobs_goals_per_s": goals / (last_job - start),
        "jobs_per_s": len(ran) / (last_job - start),
        "jobs_per_goal": len(ran) / goals,
        "post_per_s": goals / posted_in,
        "create_ms": create_job_ms(ran),
        "cpu_ms": cpu,
        # The embedded store's one write lock, every process's transactions (goalhub_store_write_*).
        "writes_per_goal": sum(writes.get(("writes", role), 0.0) for role in WRITERS) / goals,
        "write_held_share": sum(writes.get(("held", role), 0.0) for role in WRITERS) / (last_job - start),
        **{f"write_{what}_ms_{role}": writes.get((what, role), 0.0) * 1000 / goals
           for what in ("wait", "held") for role in WRITERS},
    }


WRITERS = ("api", "worker")  # the role label of goalhub_store_write*


def store_writes() -> dict[tuple[str, str], float]:
    """Every process's write transactions on the embedded store so far, from the metric files
    (``goalhub_store_write*``): (what, role) -> how many ("writes"), the seconds they waited for
    its write lock ("wait") and held it ("held")."""
    from goalhub import metrics

    names = {"goalhub_store_writes_total": "writes", "goalhub_store_write_wait_seconds_total": "wait",
             "goalhub_store_write_held_seconds_total": "held"}
    totals: dict[tuple[str, str], float] = {}
    for family in metrics.registry().collect():
        for sample in family.samples:
            if sample.name in names:
                key = (names[sample.name], sample.labels.get("role", ""))
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def create_job_ms(ids: set[str]) -> float:
    """The median run time of the ``create_goal`` jobs among ``ids`` (RQ's started -> ended), in ms:
    the worker's own cost of a goal with its inline receivers, without the HTTP side."""
    import statistics

    jobs = fetch_jobs({i for i in ids if i.startswith("create-")})
    return statistics.median((j.ended_at - j.started_at).total_seconds() * 1000 for j in jobs if j.ended_at and j.started_at)


def latency_run(db: Any, client: Client, rate: float, seconds: float, receivers: int, least: int) -> dict[str, Any]:
    count = max(least, round(rate * seconds))
    pairs = prepare(db, count)
    posted: list[tuple[str, float]] = []
    start = time.monotonic()
    for i, pair in enumerate(pairs):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        posted.append(client.post(*pair))
    achieved = count / (time.monotonic() - start) if count > 1 else rate
    last = settle(db, [gid for gid, _ in posted], receivers)
    support.wait_for(rq_idle, timeout=120, interval=0.1, what="the queues to drain")
    latencies = [(last[gid] - sent) * 1000 for gid, sent in posted]
    return {"p50": support.percentile(latencies, 50), "p95": support.percentile(latencies, 95),
            "max": max(latencies), "rate": achieved, "count": count}


CONFIGS = (("pool", 1), ("pool", 2), ("fork", 1), ("fork", 2))
MEMORY_ONLY = (("pool", 4), ("fork", 4))


def start(kind: str, count: int, home: Path) -> list[Any]:
    if kind == "pool":
        return support.start_pool(count, home, tag=str(count))
    return support.start_workers(count, home, tag=f"fork{count}-")


class Peak:
    """The largest (RSS, PSS) of the processes, sampled every 0.1 s while in the block."""

    def __init__(self, started: list[Any]) -> None:
        self.started, self.rss, self.pss = started, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            rss, pss = support.memory(self.started)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    options = support.arguments(__doc__)
    repeats = 3
    # G = 300 goals per throughput run: at 100-180 goals/s, 40 (this bench's G until 2026-12-04)
    # ended before the API, the client threads and the workers were all busy at once, and
    # measured the ramp more than the rate (pool 2: 118 goals/s with 40, 163-180 with 400).
    floor_jobs, goals, seconds, least = (100, 20, 5.0, 10) if options.quick else (150, 300, 10.0, 20)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with support.temporary_home(load_plugins=support.REAL_PLUGINS) as home:
        try:
            import goalhub.api  # noqa: F401
        except ImportError as exc:
            print(f"## End to end: skipped, the API package does not import ({exc})\n")
            return
        from goalhub.auth import mint_token
        from goalhub.connection import embedded_redis_pid
        from goalhub.plugins import plugin_infos
        from goalhub.receivers import receivers
        from goalhub.store import get_database

        loaded = {info.name for info in plugin_infos() if not info.blocked and not info.error}
        missing = sorted(set(support.REAL_PLUGINS) - loaded)
        if missing:
            print(f"## End to end: skipped, plugins not installed: {', '.join(missing)}\n")
            return
        n_receivers = len(receivers("goal.created"))
        db = get_database()
        token = mint_token(support.STREAMER, ["CREATOR"])  # before the server: one dev key file
        api, base = support.start_api(home, workers=2, threads=4)
        client = Client(base, token)
        scheduler = support.start_scheduler(home)
        with support.children(api, scheduler):
            for kind, count in CONFIGS + MEMORY_ONLY:
                label = f"{kind} {count}"
                with support.children(*start(kind, count, home)) as started:
                    throughput_run(db, client, 2 * count, n_receivers)  # warm-up: first imports, connections
                    time.sleep(0.5)
                    idle = support.memory(started)
                    if (kind, count) in MEMORY_ONLY:
                        with Peak(started) as peak:
                            throughput_run(db, client, goals, n_receivers)
                        results[(kind, count)] = {"idle": idle, "loaded": (peak.rss, peak.pss)}
                        support.log(f"e2e: {label}: RSS idle {idle[0]:.0f} MiB, loaded {peak.rss:.0f} MiB")
                        continue
                    # Alternated: the plain rq floor and these workers' own floor right before each
                    # throughput run; the ratios are taken per triple, so the machine's drift between
                    # runs (it is shared) does not enter them.
                    plain, plain_n, plain_cpu, floor, runs, peaks = [], [], [], [], [], []
                    plain_sep: list[float] = []
                    plain_rqpool: list[float] = []
                    pids = {"api": [api.popen.pid], "workers": [child.popen.pid for child in started],
                            "redis": [embedded_redis_pid(home) or 0], "scheduler": [scheduler.popen.pid]}
                    for _ in range(repeats):
                        rate, cpu = plain_rq_floor(floor_jobs, home)
                        plain.append(rate)
                        if count > 1:
                            # N plain workers at their best: N `rq worker` processes, or RQ's own
                            # `rq worker-pool -n N` (faster per process in 15 of 17 pairs by hand).
                            separate, pooled = plain_rq_floor(floor_jobs, home, count), \
                                plain_rq_floor(floor_jobs, home, count, pool=True)
                            plain_sep.append(separate[0])
                            plain_rqpool.append(pooled[0])
                            rate_n, cpu_n = max(separate[0], pooled[0]), min(separate[1], pooled[1])
                        else:
                            rate_n, cpu_n = rate, cpu
                        plain_n.append(rate_n)
                        plain_cpu.append(cpu_n)
                        floor.append(floor_run(floor_jobs))
                        with Peak(started) as peak:
                            runs.append(throughput_run(db, client, goals, n_receivers, pids))
                        peaks.append((peak.rss, peak.pss))
                    support.log(f"e2e: {label}: plain rq {Spread.of(plain).fmt()} jobs/s, own floor "
                                f"{Spread.of(floor).fmt()} jobs/s, {Spread.of(r['goals_per_s'] for r in runs).fmt(2)} goals/s")
                    light = 0.5 * Spread.of(r["goals_per_s"] for r in runs).median
                    latency = latency_run(db, client, light, seconds, n_receivers, least)
                    support.log(f"e2e: {label}: latency p50 {latency['p50']:.0f} ms p95 {latency['p95']:.0f} ms")
                    results[(kind, count)] = {"plain": plain, "plain_n": plain_n, "plain_cpu": plain_cpu, "floor": floor,
                                              "plain_sep": plain_sep, "plain_rqpool": plain_rqpool,
                                              "runs": runs, "latency": latency,
                                              "idle": idle, "loaded": max(peaks)}
        honest = _report(results, repeats, floor_jobs, goals, n_receivers, options.json)
    if not honest:
        # The floor is what every goalhub figure is measured against: a wrong one misleads them all.
        raise SystemExit("the no-op floor of a forking goalhub worker is not within 2x of a plain rq worker's")


KINDS = {"pool": "pool of non-forking workers (goalhub worker --pool N)", "fork": "forking worker(s)"}


def _report(results: dict[tuple[str, int], dict[str, Any]], repeats: int, floor_jobs: int, goals: int,
            n_receivers: int, json_path: Path | None) -> bool:
    """Print the tables, write the headlines; returns whether the forking worker's own floor is
    within 2x of plain RQ's."""
    print(f"## End to end: exclusive goals, POST (202) -> last receiver outcome "
          f"({repeats} repeats: {floor_jobs} no-op jobs per floor, {goals} goals per throughput run)\n")
    rows, headlines = [], []
    fork = results[("fork", 1)]
    own = Spread.of(fork["floor"]).median
    plain_all = Spread.of(x for (_, _), r in results.items() if "plain" in r for x in r["plain"])
    honest = own >= plain_all.median / 2
    headlines.append(Headline("e2e", "no-op jobs/s, 1 forking goalhub worker (goalhub.worker.noop)", f"{own:.0f} jobs/s",
                              f"plain rq worker --burst {plain_all.median:.0f} jobs/s (time.time)",
                              f"{own / plain_all.median:.2f}x: {'within' if honest else 'NOT within'} 2x"))
    for (kind, count), r in results.items():
        if "runs" not in r:
            continue
        goals_s = Spread.of(x["goals_per_s"] for x in r["runs"])
        per_goal = Spread.of(x["jobs_per_goal"] for x in r["runs"])
        plain, floor = Spread.of(r["plain"]), Spread.of(r["floor"])
        triples = list(zip(r["runs"], r["plain"], r["floor"], strict=True))
        # Per worker process against one plain forking worker, and against the plain floor per
        # process of as many plain workers draining together (the same for N = 1).
        vs_plain = Spread.of(x["goals_per_s"] / count / p for x, p, _ in triples)
        same_n = list(zip(r["runs"], r["plain_n"], strict=True))
        vs_same = Spread.of(x["goals_per_s"] / p for x, p in same_n)
        strict = Spread.of(x["all_jobs_goals_per_s"] / p for x, p in same_n)
        vs_own = Spread.of(x["goals_per_s"] / f for x, _, f in triples)
        posts = Spread.of(x["post_per_s"] for x in r["runs"])
        rows.append([f"{kind} {count}", goals_s.fmt(2), f"{goals_s.median / count:.2f}", plain.fmt(1),
                     Spread.of(p / count for p in r["plain_n"]).fmt(1), vs_same.fmt(3), strict.fmt(3), vs_plain.fmt(3),
                     floor.fmt(1), vs_own.fmt(3), f"{per_goal.median:.1f}", posts.fmt(1)])
        # The measure: goals/s per worker process against the plain floor per worker
        # process with as many plain workers (its "0.39 with 2" forking workers was taken against
        # 2 workers' floor, 142 jobs/s: 71 per worker). For N = 1 that is one plain worker.
        target = "goal >= 1.2" if kind == "pool" else "for comparison; was 0.46 (1), 0.39 (2)"
        if count == 1:
            meets = f": {'meets' if vs_plain.median >= 1.2 else 'misses'}" if kind == "pool" else ""
            headlines.append(Headline("e2e", f"goals/s per worker process vs plain rq no-op jobs/s, {count} {KINDS[kind]}",
                                      f"{goals_s.median:.2f} goals/s ({goals_s.median / count:.2f} per process)",
                                      f"plain rq worker --burst {plain.median:.0f} no-op jobs/s (same run, alternating)",
                                      f"{vs_plain.median:.3f} [{vs_plain.low:.2f} - {vs_plain.high:.2f}] ({target}){meets}"))
        else:
            # N processes sharing the cores with Redis, as the N workers under test share them
            # (with the API and the client besides).
            vs_plain_n = Spread.of(x["goals_per_s"] / p for x, p in zip(r["runs"], r["plain_n"], strict=True))
            plain_n = Spread.of(r["plain_n"])
            sep_rq = Spread.of(r["plain_sep"]).median / count
            pooled_rq = Spread.of(r["plain_rqpool"]).median / count
            meets_n = f": {'meets' if vs_plain_n.median >= 1.2 else 'misses'}" if kind == "pool" else ""
            headlines.append(Headline(
                "e2e", f"goals/s per worker process vs plain rq no-op jobs/s per process, {count} {KINDS[kind]} "
                       f"against {count} plain rq workers",
                f"{goals_s.median:.2f} goals/s ({goals_s.median / count:.2f} per process)",
                f"{count} plain forking rq workers at their best ({count} rq worker --burst {sep_rq:.0f}, rq worker-pool "
                f"-n {count} --burst {pooled_rq:.0f}): {plain_n.median / count:.0f} no-op jobs/s per process (same run, "
                "alternating)",
                f"{vs_plain_n.median:.3f} [{vs_plain_n.low:.2f} - {vs_plain_n.high:.2f}] ({target}){meets_n}"))
            # Stricter, beside it: against one plain worker with the cores to itself.
            headlines.append(Headline(
                "e2e", f"the same against one plain rq worker alone (stricter; not the goal), {count} {KINDS[kind]}",
                f"{goals_s.median / count:.2f} goals/s per process",
                f"plain rq worker --burst {plain.median:.0f} no-op jobs/s",
                f"{vs_plain.median:.2f} [{vs_plain.low:.2f} - {vs_plain.high:.2f}]"))
        headlines.append(Headline("e2e", f"RQ jobs per exclusive goal, {count} {KINDS[kind]}", f"{per_goal.median:.1f}",
                                  "was 2.0", f"goal 1: {'meets' if per_goal.median <= 1.05 else 'misses'}"))
    print(support.table(
        ["workers", "goals/s", "goals/s per process", "plain rq floor: no-op jobs/s, 1 worker",
         "the same, N workers together, per process", "goals/s per process / that, per triple (the goal's)",
         "the same until every job ended", "goals/s per process / 1 plain worker's, per triple",
         "own floor: no-op jobs/s on these workers", "goals/s / own floor, per triple", "jobs per goal",
         "POST/s the API took (4 client threads)"],
        rows, title="Throughput: median [min - max]",
    ))
    print("Before each throughput run: a plain `rq worker --burst` (RQ's CLI, one forking worker, `time.time` jobs) "
          "drains its no-op jobs; for N workers also N of them together and RQ's `rq worker-pool -n N --burst`, the "
          "better of the two per triple ('N workers together'); then the workers under test drain "
          "`goalhub.worker.noop` jobs (their own floor); "
          "the ratios are taken per triple of runs (median [min - max]), so the machine's drift stays out of them. "
          "goals/s runs from the first POST to the last receiver outcome (the issue's measure); 'until every job "
          "ended' waits for every job the goals caused too. When goals/s is near the POST/s the API took, the API "
          "(sharing the cores) is what limits the run, not the workers.\n")
    headlines += _cpu_report(results)
    lat_rows = []
    for (kind, count), r in results.items():
        if "latency" not in r:
            continue
        lat = r["latency"]
        lat_rows.append([f"{kind} {count}", f"{lat['rate']:.1f} goals/s x {lat['count']} (half the throughput)",
                         f"{lat['p50']:,.0f}", f"{lat['p95']:,.0f}", f"{lat['max']:,.0f}"])
        goal = 30 if kind == "pool" else 100
        headlines.append(Headline("e2e", f"latency POST -> last outcome at {lat['rate']:.1f} goals/s (half), {kind} {count}",
                                  f"p50 {lat['p50']:,.0f} ms / p95 {lat['p95']:,.0f} ms", "was p95 13-370 ms",
                                  f"goal p95 <= {goal} ms: {'meets' if lat['p95'] <= goal else 'misses'}"))
    print(support.table(["workers", "load", "p50 ms", "p95 ms", "max ms"], lat_rows,
                        title="Latency from POST to the goal's last receiver outcome at half the throughput"))
    mem_rows = []
    for count in (1, 2, 4):
        pool, forked = results[("pool", count)], results[("fork", count)]
        mem_rows.append([count, *(f"{v:.0f}" for v in (pool["idle"][0], forked["idle"][0], pool["idle"][1], forked["idle"][1],
                                                        pool["loaded"][0], forked["loaded"][0], pool["loaded"][1],
                                                        forked["loaded"][1]))])
        headlines.append(Headline("e2e", f"memory (PSS) of {count} worker(s), idle / loaded",
                                  f"pool {pool['idle'][1]:.0f} / {pool['loaded'][1]:.0f} MiB",
                                  f"forking {forked['idle'][1]:.0f} / {forked['loaded'][1]:.0f} MiB",
                                  f"{pool['loaded'][1] / forked['loaded'][1]:.2f}x loaded"))
    print(support.table(["workers", "idle RSS pool", "idle RSS forking", "idle PSS pool", "idle PSS forking",
                         "loaded RSS pool", "loaded RSS forking", "loaded PSS pool", "loaded PSS forking"], mem_rows,
                        title="Memory in MiB, summed over the workers' processes (a pool: its parent and workers; "
                              "forking: each worker and its horse); loaded: the peak during throughput runs"))
    print("RSS counts a page that forked processes share once per process, PSS divides it among them (what "
          "they take together). A pool's workers share what the parent loaded before forking.\n")
    print(f"goal.created has {n_receivers} receivers with the real plugins; an ExclusiveGoal runs 5 of them, inline "
          "in its create_goal job. Jobs per goal counts every RQ job a goal caused (create_goal, the analytics "
          "task, any receiver retry). The API server (waitress), the scheduler, the workers and this client share "
          "the machine's cores.\n")
    support.write_headlines(json_path, headlines)
    return honest


ROLES = ("api", "workers", "redis", "scheduler", "client")


def _cpu_report(results: dict[tuple[str, int], dict[str, Any]]) -> list[Headline]:
    """Print what a goal costs every process in CPU against what a plain no-op job costs; returns
    the headlines."""
    import os

    cores = os.cpu_count() or 1
    rows, headlines = [], []
    for (kind, count), r in results.items():
        if "runs" not in r:
            continue
        per_role = {role: Spread.of(x["cpu_ms"][role] for x in r["runs"]).median for role in ROLES}
        total = Spread.of(sum(x["cpu_ms"].values()) for x in r["runs"])
        plain = Spread.of(r["plain_cpu"])
        rows.append([f"{kind} {count}", *(f"{per_role[role]:.1f}" for role in ROLES), total.fmt(1), plain.fmt(1),
                     f"{plain.median / total.median:.2f}", f"{cores * 1000 / total.median:.0f}"])
        headlines.append(Headline(
            "e2e", f"CPU per goal, every process (API, workers, Redis, scheduler, client), {count} {KINDS[kind]}",
            f"{total.median:.1f} ms (workers {per_role['workers']:.1f}, API {per_role['api']:.1f})",
            f"{count} plain rq worker --burst: {plain.median:.1f} ms per no-op job (workers and Redis)",
            f"{plain.median / total.median:.2f} plain jobs' CPU per goal's"))
    print(support.table(
        ["workers", "write transactions per goal", "the lock held: share of the run",
         "ms a goal's writes waited for it: API / workers", "ms they held it: API / workers"],
        [[f"{kind} {count}", Spread.of(x["writes_per_goal"] for x in r["runs"]).fmt(1),
          Spread.of(x["write_held_share"] for x in r["runs"]).fmt(2),
          *(" / ".join(f"{Spread.of(x[f'write_{what}_ms_{role}'] for x in r['runs']).median:.2f}" for role in WRITERS)
            for what in ("wait", "held"))]
         for (kind, count), r in results.items() if "runs" in r],
        title="The embedded store's one write lock during the throughput runs: median [min - max]"))
    print("Every process's write transactions (the API's and the workers'), from goalhub_store_write_* (held: to "
          "the end of the COMMIT, with the checkpoint SQLite runs in a commit that takes the WAL past its threshold, "
          "the API's at 1,000 pages): the lock lets one write at a time, so the share of the run it was held bounds "
          "what more workers on this store can add, and a worker's wait is time its core may sit idle.\n")
    print(support.table(
        ["workers", "API ms", "workers ms", "Redis ms", "scheduler ms", "client ms", "goal: all processes ms",
         "plain rq: ms per no-op job (its workers + Redis)", "plain job / goal", f"goals/s the {cores} cores allow"],
        rows, title="CPU per goal, by process, during the throughput runs: median [min - max]"))
    print("CPU seconds (user + system) each process used from the first POST until every goal settled, per goal: "
          "the API server (waitress, its processes), the workers (a pool: its parent and workers; forking: each "
          "worker and its horses), Redis, the scheduler (asking 20 times a second whether a job is due), and this "
          "benchmark's client threads (http.client, kept-alive connections). The plain floor's: its workers "
          "(with their horses, from wait4, less their start on an empty queue) and Redis, per no-op job. All of them share this machine's cores: "
          "goals/s cannot pass cores x 1000 / (a goal's ms), so with 2 workers on 2 cores the goal's whole "
          "cost, not the worker's alone, sets the ratio per process.\n")
    return headlines


if __name__ == "__main__":
    main()
