"""Issue 24 item 2: health and metrics that see the work, and a full disk that is a 503.

- ``/healthz/deep`` fails (503 ``work_stalled``) while no worker or no scheduler has been seen
  for ``GOALHUB_LIVENESS_WINDOW``, and passes once real ones run; ``/metrics`` counts them
  (``goalhub_workers`` by queue, ``goalhub_schedulers``) with build info and each process's cost.
- A store that is full (SQLite's own SQLITE_FULL, from a page limit on its real connection)
  answers ``POST /sessions`` with 503 ``storage_full`` and ``Retry-After``, not a 500.
- A worker name held on another host is taken over once its heartbeat expired, not before.
- The first samples of several threads at once are all recorded (they raised
  ``DuplicateTimeseries`` after each restart, and one request's sample was dropped).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import api_support
import pytest
from rq import Worker
from rq.utils import utcformat

from goalhub.api import create_app
from goalhub.api.openapi import DeepHealth, Error
from goalhub.auth import mint_token
from goalhub.connection import get_redis
from goalhub.queues import all_queues
from goalhub.store import get_database
from goalhub.worker import RecoveringWorker

STREAMER = "6800a9073e0c346531958b03"


@pytest.fixture
def client():
    return create_app().test_client()


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(STREAMER, ['ADMIN'])}"}


def test_deep_health_and_metrics_see_workers_and_schedulers(client, tmp_path, monkeypatch):
    monkeypatch.setenv("GOALHUB_LIVENESS_WINDOW", "2")
    response = client.get("/healthz/deep")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "work_stalled"
    assert response.get_json()["error"]["down"] == ["no_worker", "no_scheduler"]
    Error.model_validate(response.get_json())

    env = api_support.process_env()
    worker = api_support.ChildProcess("worker", "from goalhub.worker import run_worker; run_worker()", env, tmp_path)
    scheduler = api_support.ChildProcess("scheduler", "from goalhub.scheduler import run_scheduler; run_scheduler()",
                                         env, tmp_path)
    try:
        body = api_support.wait_for(lambda: (lambda r: r.get_json() if r.status_code == 200 else None)(
            client.get("/healthz/deep")), timeout=60, what="/healthz/deep to pass")
        assert body["workers"] == {"goalhub-lifecycle": 1, "goalhub": 1, "goalhub-backfill": 1}
        assert body["schedulers"] == 1 and body["disk_free_bytes"] > 0
        DeepHealth.model_validate(body)  # as the OpenAPI document says

        text = client.get("/metrics", headers=admin()).get_data(as_text=True)
        assert 'goalhub_workers{queue="goalhub"} 1.0' in text
        assert "goalhub_schedulers 1.0" in text
        assert 'goalhub_build_info{' in text and 'version="0.1.0"' in text
        for role, pid in (("worker", worker.popen.pid), ("scheduler", scheduler.popen.pid)):
            assert f'goalhub_process_resident_memory_bytes{{pid="{pid}",role="{role}"}}' in text
            assert f'goalhub_process_cpu_seconds_total{{pid="{pid}",role="{role}"}}' in text

        # kill -9: the worker's pid is gone on this host, so it is dead at once; the deep check
        # fails once the window has passed without another.
        worker.popen.send_signal(signal.SIGKILL)
        worker.popen.wait(timeout=10)
        text = client.get("/metrics", headers=admin()).get_data(as_text=True)
        assert 'goalhub_workers{queue="goalhub"} 0.0' in text
        response = api_support.wait_for(lambda: (lambda r: r if r.status_code == 503 else None)(
            client.get("/healthz/deep")), timeout=30, what="/healthz/deep to fail")
        assert response.get_json()["error"]["down"] == ["no_worker"]
    finally:
        worker.stop()
        scheduler.stop()


def test_a_full_store_is_a_503_storage_full_not_a_500(client):
    db = get_database()
    if not hasattr(db.client, "_conn"):
        pytest.skip("the embedded store only: SQLite's own page limit makes it full")
    db.sessions.insert_one({"warm": True})  # this thread's connection, opened
    conn = db.client._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for pad in (4096, 512, 64, 0):  # fill what is left of the last pages, down to the smallest document
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for n in range(100_000):
                db.filler.insert_one({"n": n, "pad": "x" * pad})
    token = mint_token(STREAMER, ["CREATOR", "PLATFORM"])
    response = client.post("/sessions", json={"sources": [{"room_id": "r1", "task_id": "t1"}]},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json() == {"error": {"code": "storage_full", "message": "storage is full; retry later"}}
    assert response.headers["Retry-After"] == "30"
    conn.execute(f"PRAGMA max_page_count = {2**30}")


def test_the_first_samples_of_many_threads_at_once_are_all_recorded(tmp_path):
    code = textwrap.dedent(f"""
        import os, threading
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        from goalhub import metrics
        barrier = threading.Barrier(8)
        def hit():
            barrier.wait()
            metrics.http_request("POST", "/goals", 202, 0.01)
        threads = [threading.Thread(target=hit) for _ in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path={str(tmp_path)!r})
        print(generate_latest(registry).decode())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=api_support.process_env())
    assert done.returncode == 0, done.stderr
    assert "could not record" not in done.stderr, done.stderr
    assert 'goalhub_http_requests_total{method="POST",route="/goals",status="202"} 8.0' in done.stdout


@pytest.mark.parametrize("beat_age, taken_over", [(30, False), (121, True)])
def test_a_name_held_on_another_host_is_taken_over_only_once_its_heartbeat_expired(beat_age, taken_over):
    """``GOALHUB_WORKER_TTL`` (60) + 60 s without a heartbeat: dead, whatever host it ran on."""
    connection = get_redis()
    held = Worker(all_queues(), connection=connection, name="goalhub-elsewhere-1")
    held.register_birth()
    connection.hset(held.key, mapping={"hostname": "another-host", "pid": 4242,
                                       "last_heartbeat": utcformat(datetime.now(UTC) - timedelta(seconds=beat_age))})
    new = RecoveringWorker(all_queues(), connection=connection, name="goalhub-elsewhere-1")
    if taken_over:
        new.register_birth()
        assert Worker.find_by_key(new.key, connection=connection).hostname != "another-host"
    else:
        with pytest.raises(ValueError, match="There exists an active worker"):
            new.register_birth()
