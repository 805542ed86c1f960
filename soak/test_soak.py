"""The chaos soak (issue 12): ``make soak``, never part of ``make test``.

``goalhub up`` (2 RQ workers, 2 API processes, the scheduler, the embedded Redis) with the
real plugins and every outbound service pointed at a local counting server. The workers are a
pool of 2 non-forking workers, ``up``'s default kind (``SOAK_WORKERS=fork``: 2 forking workers,
``up --fork``). 8 HTTP clients
create goals (countdowns activated by the scheduler at their nbf, and funding goals that send
``goal.added``) while a chaos thread kills a random worker with ``kill -9`` every few seconds
and restarts the embedded Redis (a clean SHUTDOWN; ``up`` starts it again), and Redis loses
all its data (``FLUSHALL``) three times: twice while the goals are being created, once while
they settle (issue 21: the store is the system of record). A killed worker is a pool worker,
which the pool replaces, or a forking worker, which ``up`` restarts. At the end a
checker verifies every goal exactly once, every (event, receiver) ``ok`` (or ``skipped``)
exactly once, every outbound call ``sent`` exactly once and received by the sink once (again
only where a kill cut a try off between the call and its ``sent`` mark, as its record's
``tries`` and ``attempts`` show: ``goalhub.outbound``'s one at-least-once window, under the
same Idempotency-Key), and the processes' RSS at the start and the end is reported.
Bounded: it stops by itself within ``BUDGET`` seconds.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from bson import ObjectId

from goalhub import connection, store
from goalhub.auth import mint_token
from goalhub.supervisor import STABLE_AFTER
from goalhub.testing import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' support modules
from reliability.support import OutboundServer  # noqa: E402

GOALS = int(os.environ.get("SOAK_GOALS", "504"))
CLIENTS = 8
MIN_KILLS = 20
REDIS_RESTARTS = 3
# Redis data losses (FLUSHALL): a third and two thirds of the way through the goals' creation
# (accepted goals whose create jobs are lost), then once while the goals settle (receiver
# retries, scheduled activations and ends lost).
REDIS_FLUSHES = 3
FLUSH_SETTLING_AT = 40  # seconds into the chaos
BUDGET = 540  # seconds: the whole soak, start to stop, stays under 10 minutes
PLUGINS = "exclusive,show,karaoke,snapshot,analytics,livestream"
POOL = os.environ.get("SOAK_WORKERS", "pool") != "fork"
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"


def rss_table(up_pid: int, home: Path) -> list[dict[str, Any]]:
    rows = []
    processes = [psutil.Process(up_pid), *psutil.Process(up_pid).children(recursive=True)]
    redis_pid = connection.embedded_redis_pid(home)
    if redis_pid and redis_pid not in {p.pid for p in processes}:
        processes.append(psutil.Process(redis_pid))
    for process in processes:
        try:
            command = process.cmdline()
            role = " ".join(command[2:4]) if "goalhub" in command[:4] else process.name()
            rows.append({"pid": process.pid, "role": role, "rss_mib": round(process.memory_info().rss / 2**20, 1)})
        except psutil.Error:
            pass
    return rows


class Clients:
    """8 threads creating goals over HTTP; a 503 or a dropped connection is retried with the same
    Idempotency-Key, so a goal is asked for once however often its request is sent."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.auth = {"Authorization": f"Bearer {token}"}
        self.created: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.retries = collections.Counter()
        self.errors: list[str] = []

    def call(self, method: str, path: str, body: dict[str, Any], key: str) -> requests.Response:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = requests.request(method, f"{self.base}{path}", json=body, timeout=15,
                                            headers={**self.auth, "Idempotency-Key": key})
                if response.status_code not in (409, 502, 503) or "already_bound" in response.text:
                    return response
                self.retries[response.status_code] += 1
            except requests.RequestException as exc:
                self.retries[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path} kept failing")
            time.sleep(0.3)

    def run(self, number: int, count: int) -> None:
        try:
            sources = [{"room_id": f"room-{number}", "task_id": f"task-{number}"}]
            session = self.call("POST", "/sessions", {"sources": sources}, f"session-{number}")
            assert session.status_code == 201, session.text
            sid = session.json()["_id"]
            for index in range(count):
                now = time.time()
                kind = "trigger_exclusive" if index % 2 == 0 else "show_funding"
                nbf = round(now + (2 if kind == "trigger_exclusive" else 0), 3)
                body = {"levels": [{"target": 60}], "context": {"session_id": sid}, "nbf": nbf,
                        "exp": round(now + 3600, 3)}
                response = self.call("POST", f"/goals?type={kind}", body, str(uuid.uuid4()))
                assert response.status_code == 202, response.text
                with self.lock:
                    self.created[response.json()["goal_id"]] = {"type": kind, "nbf": nbf}
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            self.errors.append(f"client {number}: {exc!r}")


class Chaos:
    """kill -9 a random worker (of those up for more than STABLE_AFTER s) every 2-4 s; restart the
    embedded Redis at set points; make Redis lose all its data (``FLUSHALL``) while goals are
    created and while they settle (a thread of its own, to hit the creation)."""

    def __init__(self, up_pid: int, home: Path, clients: Clients | None = None) -> None:
        self.up_pid = up_pid
        self.home = home
        self.clients = clients
        self.kills = 0
        self.redis_restarts = 0
        self.redis_flushes = 0
        self.stop = threading.Event()
        self.log: list[str] = []

    def flushes(self) -> None:
        started = time.monotonic()
        marks = [GOALS // 3, 2 * GOALS // 3]
        while not self.stop.wait(0.02) and self.redis_flushes < REDIS_FLUSHES:
            created = len(self.clients.created) if self.clients else 0
            due = (created >= marks[self.redis_flushes] if self.redis_flushes < len(marks)
                   else time.monotonic() - started > FLUSH_SETTLING_AT)
            if not due:
                continue
            try:
                connection.get_redis().flushall()
            except Exception as exc:  # noqa: BLE001  (Redis restarting: try again)
                self.log.append(f"flush failed: {exc!r}")
                continue
            self.redis_flushes += 1
            self.log.append(f"{time.monotonic() - started:.1f}s redis FLUSHALL {self.redis_flushes} "
                            f"({created} goals accepted)")

    def workers(self) -> list[psutil.Process]:
        """The processes that run jobs: a pool's workers (the children of ``goalhub worker
        --pool``), or the forking workers ``up`` started."""
        found = []
        for child in psutil.Process(self.up_pid).children():
            try:
                if child.cmdline()[2:4] == ["goalhub", "worker"] and child.status() != psutil.STATUS_ZOMBIE:
                    found += [w for w in child.children() if w.status() != psutil.STATUS_ZOMBIE] if POOL else [child]
            except psutil.Error:
                pass
        return found

    def run(self) -> None:
        rng = random.Random(12)
        started = time.monotonic()
        while not self.stop.wait(rng.uniform(2, 4)):
            elapsed = time.monotonic() - started
            if self.redis_restarts < REDIS_RESTARTS and elapsed > 25 * (self.redis_restarts + 1):
                connection.stop_embedded_redis(self.home)  # SHUTDOWN SAVE; `up` starts it again
                self.redis_restarts += 1
                self.log.append(f"{elapsed:.0f}s redis restart {self.redis_restarts}")
                continue
            # A forking worker that ran STABLE_AFTER seconds restarts after 1 s; one killed sooner
            # backs off. A pool replaces its worker at once.
            age = 1 if POOL else STABLE_AFTER + 1
            workers = [w for w in self.workers() if time.time() - w.create_time() > age]
            if workers:
                victim = rng.choice(workers)
                try:
                    victim.send_signal(signal.SIGKILL)
                    self.kills += 1
                    self.log.append(f"{elapsed:.0f}s kill -9 worker {victim.pid}")
                except psutil.Error:
                    pass


def settled(db, created: dict[str, dict[str, Any]]) -> tuple[bool, dict[str, int]]:
    """Whether every goal is stored, delivered, its outcomes final, and active once past its nbf."""
    state = collections.Counter()
    ids = [ObjectId(gid) for gid in created]
    goals = {str(g["_id"]): g for g in db.goals.find({"_id": {"$in": ids}})}
    state["stored"] = len(goals)
    events = collections.defaultdict(dict)
    for event in db.events.find({"goal_id": {"$in": list(created)}}):
        events[event["goal_id"]][event["event"]] = event["receivers"]
    outcomes = collections.defaultdict(list)
    for outcome in db.outcomes.find({"goal_id": {"$in": list(created)}}, {"arguments": 0}):
        outcomes[outcome["goal_id"]].append(outcome)
    for gid, info in created.items():
        goal = goals.get(gid)
        if goal is None or "goal.created" not in events[gid]:
            state["pending"] += 1
            continue
        if info["type"] == "show_funding" and "goal.added" not in events[gid]:
            state["pending"] += 1
            continue
        expected = sum(len(receivers) for receivers in events[gid].values())
        final = [o for o in outcomes[gid] if o["status"] in ("ok", "skipped")]
        if len(outcomes[gid]) < expected or len(final) < len(outcomes[gid]):
            state["pending"] += 1
            continue
        if info["nbf"] <= time.time() - 1 and not goal.get("active"):
            state["pending"] += 1
            continue
        state["settled"] += 1
    return state["settled"] == len(created), dict(state)


@pytest.mark.timeout(BUDGET + 60)
def test_chaos_soak(tmp_path, monkeypatch):
    began = time.monotonic()
    home = Path(f"/tmp/goalhub-soak-{os.getpid()}")
    home.mkdir(mode=0o700, exist_ok=True)
    sink = OutboundServer()
    environment = {
        "GOALHUB_HOME": str(home), "GOALHUB_LOAD_PLUGINS": PLUGINS,
        "GOALHUB_JWT_KEYS": "soak:a-soak-signing-key-long-enough-1234567890",
        "GOALHUB_RATE_LIMIT_GOALS": "off", "GOALHUB_RATE_LIMIT_SESSIONS": "off", "GOALHUB_MAX_OPEN_GOALS": "0",
        # Recover the jobs of killed workers quickly, retry failed receivers quickly.
        "GOALHUB_MAINTENANCE_INTERVAL": "5", "GOALHUB_RECEIVER_BACKOFF": "1", "GOALHUB_RECEIVER_RETRIES": "8",
        # The soak crashes workers on purpose, ~1 per worker per 7 s: not a crash loop.
        "GOALHUB_RESTART_LIMIT": "40", **sink.environment(),
    }
    monkeypatch.delenv("GOALHUB_REDIS_URL", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    store.reset()
    port = free_port()
    log_path = ARTIFACTS / "soak-up.log"
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    up = subprocess.Popen([sys.executable, "-m", "goalhub", "up", "--port", str(port), "--workers", "2",
                           "--api-workers", "2", "--stop-timeout", "5", *([] if POOL else ["--fork"])],
                          env=dict(os.environ),
                          stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and up.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(3)  # every process started and connected
        report["rss_start"] = rss_table(up.pid, home)

        token = mint_token("6800a9073e0c346531958b03", ["CREATOR", "PLATFORM"], ttl=3600)
        clients = Clients(base, token)
        chaos = Chaos(up.pid, home, clients)
        chaos_thread = threading.Thread(target=chaos.run, name="chaos", daemon=True)
        chaos_thread.start()
        flush_thread = threading.Thread(target=chaos.flushes, name="flushes", daemon=True)
        flush_thread.start()
        per_client = -(-GOALS // CLIENTS)
        threads = [threading.Thread(target=clients.run, args=(n, per_client)) for n in range(CLIENTS)]
        created_at = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(BUDGET - (time.monotonic() - began) - 120, 10))
        report["create_seconds"] = round(time.monotonic() - created_at, 1)
        assert not clients.errors, clients.errors
        # Keep the chaos going until it did what the soak promises, then let the stack settle.
        while (chaos.kills < MIN_KILLS or chaos.redis_restarts < REDIS_RESTARTS
               or chaos.redis_flushes < REDIS_FLUSHES) and time.monotonic() - began < BUDGET - 120:
            time.sleep(0.5)
        chaos.stop.set()
        chaos_thread.join(timeout=10)
        flush_thread.join(timeout=10)
        db = store.get_database()
        state: dict[str, int] = {}
        while time.monotonic() - began < BUDGET - 20:
            done, state = settled(db, clients.created)
            if done:
                break
            time.sleep(1)
        report.update(goals=len(clients.created), kills=chaos.kills, redis_restarts=chaos.redis_restarts,
                      redis_flushes=chaos.redis_flushes, chaos_log=chaos.log,
                      client_retries=dict(clients.retries), settle_state=state,
                      settled_seconds=round(time.monotonic() - began, 1))
        # Measured with every process running: a worker killed last may still be in its backoff.
        deadline = time.monotonic() + 40
        while len(chaos.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        report["rss_end"] = rss_table(up.pid, home)
        report.update(check(db, clients.created, sink))
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()
        sink.stop()
        report["total_seconds"] = round(time.monotonic() - began, 1)
        report["up_exit_code"] = up.returncode
        (ARTIFACTS / "soak.json").write_text(json.dumps(report, indent=2, default=str))
        print_report(report)
        left_redis = connection.embedded_redis_pid(home)
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    assert up.returncode == 0
    assert left_redis is None, "the embedded Redis outlived goalhub up"
    assert report["goals"] >= 500 and report["kills"] >= MIN_KILLS and report["redis_restarts"] >= REDIS_RESTARTS
    assert report["redis_flushes"] >= REDIS_FLUSHES
    assert report["problems"] == [], report["problems"][:20]
    assert report["total_seconds"] < 600


def check(db, created: dict[str, dict[str, Any]], sink: OutboundServer) -> dict[str, Any]:
    """Every goal exactly once; every (event, receiver) ok or skipped, exactly once; every outbound
    call sent exactly once (one ``sent`` record per key; the sink saw each keyed call once)."""
    problems: list[str] = []
    ids = [ObjectId(gid) for gid in created]
    stored = collections.Counter(str(g["_id"]) for g in db.goals.find({"_id": {"$in": ids}}, {"_id": 1}))
    for gid in created:
        if stored[gid] != 1:
            problems.append(f"goal {gid} stored {stored[gid]} times")
    extra = db.goals.count_documents({}) - len(created)
    if extra:
        problems.append(f"{extra} goals nobody asked for")
    for record in db.accepted.find({}, {"state": 1, "reason": 1}):  # accepted, never created or failed
        problems.append(f"accepted goal {record['_id']} left {record['state']}: {record.get('reason')}")
    outcomes = list(db.outcomes.find({"goal_id": {"$in": list(created)}}, {"arguments": 0}))
    by_id = collections.Counter(o["_id"] for o in outcomes)
    attempts = collections.Counter(o.get("attempts", 0) for o in outcomes if o["status"] == "ok")
    statuses = collections.Counter(o["status"] for o in outcomes)
    pairs = 0
    for event in db.events.find({"goal_id": {"$in": list(created)}}):
        for receiver in event["receivers"]:
            pairs += 1
            key = f"{event['_id']}|{receiver}"
            if by_id[key] != 1:
                problems.append(f"outcome {key}: {by_id[key]} records")
    for outcome in outcomes:
        if outcome["status"] not in ("ok", "skipped"):
            problems.append(f"outcome {outcome['_id']} is {outcome['status']}: {outcome.get('error')}")
    records = list(db.outbound.find({"goal_id": {"$in": list(created)}}, {"payload": 0, "response": 0}))
    for record in records:
        if record["status"] != "sent":
            problems.append(f"outbound {record['_id']} is {record['status']}: {record.get('error')}")
    # Every goal's analytics event (the analytics plugin's own job, enqueued by its receiver) was
    # sent: a job Redis lost is enqueued again from the store (goalhub.durable).
    tracked = collections.Counter(r["goal_id"] for r in records if r["kind"] == "analytics")
    for gid in created:
        if tracked[gid] != 1:
            problems.append(f"goal {gid}: {tracked[gid]} analytics records")
    keyed = collections.Counter(r["key"] for r in sink.requests if r["key"])
    resent = {key: n for key, n in keyed.items() if n > 1}
    record_keys = {r["_id"] for r in records}
    for key in keyed:
        if key not in record_keys and key.split(":", 1)[0] in {r["kind"] for r in records}:
            problems.append(f"the sink got {key} with no outbound record")
    # A call the sink received again is a problem unless a crash cut its earlier try off (a kill
    # between the call and its ``sent`` mark: goalhub.outbound's one at-least-once window, which
    # the same Idempotency-Key lets the service drop): the record counts those tries.
    by_key = {r["_id"]: r for r in records}
    unexplained = {key: n for key, n in resent.items()
                   if key not in by_key or by_key[key].get("tries", 0) - by_key[key].get("attempts", 0) < n - 1}
    if unexplained:
        problems.append(f"outbound calls the sink received more than once, not after a crash: {unexplained}")
    return {"problems": problems, "outcome_statuses": dict(statuses), "event_receiver_pairs": pairs,
            "ok_attempts": dict(sorted(attempts.items())), "outbound_records": len(records),
            "outbound_by_kind": dict(collections.Counter(r["kind"] for r in records)),
            "sink_calls": len(sink.requests), "sink_keyed_calls": sum(keyed.values()), "sink_resent": len(resent)}


def print_report(report: dict[str, Any]) -> None:
    print("\n=== chaos soak ===")
    for name in ("goals", "create_seconds", "kills", "redis_restarts", "redis_flushes", "client_retries",
                 "settled_seconds",
                 "event_receiver_pairs", "outcome_statuses", "ok_attempts", "outbound_records", "outbound_by_kind",
                 "sink_calls", "sink_keyed_calls", "sink_resent", "settle_state", "total_seconds", "up_exit_code"):
        if name in report:
            print(f"{name:22} {report[name]}")
    for phase in ("rss_start", "rss_end"):
        rows = report.get(phase) or []
        print(f"{phase}: {len(rows)} processes, {sum(r['rss_mib'] for r in rows):.1f} MiB total")
        for row in rows:
            print(f"    {row['pid']:>7} {row['role']:<22} {row['rss_mib']:>7.1f} MiB")
    problems = report.get("problems") or []
    print(f"problems: {len(problems)}")
    for problem in problems[:20]:
        print(f"    {problem}")
