"""No secret reaches a log file (issue 22, row 2 and its Must show): a flow whose sink URL
carries secrets in its userinfo and query, whose sink answers with one in its reason phrase
(exception text), whose client requests carry them in headers, paths and queries, run at
DEBUG (urllib3 logs its request lines) with real processes: the API, a forking worker (its
work-horse's records go to the worker's log) and the scheduler, each to its own log file;
and ``goalhub up``, whose one output carries every child's lines and its own (every line
JSON, in JSON mode). Every log file is grepped for every secret: none is found."""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import api_support
import pytest
import requests

from goalhub.auth import mint_token
from goalhub.testing import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAMER = "6800a9073e0c346531958b03"
SINK_USER, SINK_PASSWORD = "sinkuser", "SinkPass-7Qx@w9"
SINK_KEY, SINK_TOKEN = "SinkApiKey-3Mz", "SinkToken-9Lp"
REASON_SECRET = "ReasonTok-2Kd"
DASHBOARD_PASSWORD, WRONG_PASSWORD = "DashPw-1Nc-long", "WrongPw-0Zb"
HEADER_KEY, COOKIE_SESSION = "HdrKey-5Rt", "CookieSess-8Wn"
QUERY_TOKEN, PATH_PASSWORD = "QueryTok-4Hs", "PathPw-6Jv"
FORGED_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.BadSig-Xy7"


class Sink(http.server.BaseHTTPRequestHandler):
    """The analytics sink: up, and refusing every event with a secret in its reason phrase."""

    requests = 0

    def do_POST(self) -> None:  # noqa: N802
        Sink.requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(503, f"Unavailable token={REASON_SECRET}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def sink():
    with api_support.http_server(Sink) as port:
        yield f"http://{SINK_USER}:{SINK_PASSWORD}@127.0.0.1:{port}/analytics?apikey={SINK_KEY}&token={SINK_TOKEN}"


def secrets(token: str) -> list[str]:
    basic = base64.b64encode(f"{SINK_USER}:{SINK_PASSWORD}".encode()).decode()
    dashboard = base64.b64encode(f"ops:{DASHBOARD_PASSWORD}".encode()).decode()
    return [SINK_PASSWORD, SINK_PASSWORD.split("@")[1], SINK_KEY, SINK_TOKEN, REASON_SECRET, DASHBOARD_PASSWORD,
            WRONG_PASSWORD, HEADER_KEY, COOKIE_SESSION, QUERY_TOKEN, PATH_PASSWORD, FORGED_JWT, token,
            token.rsplit(".", 1)[1], basic, dashboard]


def environment(home: Path, sink_url: str) -> dict[str, str]:
    return api_support.process_env(
        GOALHUB_HOME=str(home), GOALHUB_LOG_LEVEL="DEBUG", GOALHUB_LOG_FORMAT="json",
        GOALHUB_LOAD_PLUGINS="karaoke,analytics", GOALHUB_ANALYTICS_SINK=sink_url,
        GOALHUB_DASHBOARD_USER="ops", GOALHUB_DASHBOARD_PASSWORD=DASHBOARD_PASSWORD,
        GOALHUB_RECEIVER_RETRIES="1", GOALHUB_RECEIVER_BACKOFF="0", PROMETHEUS_MULTIPROC_DIR=str(home / "metrics"))


def flow(base: str, token: str) -> None:
    """Requests carrying secrets in every place a client can put one, and a goal whose
    analytics event the sink refuses."""
    auth = {"Authorization": f"Bearer {token}", "X-Api-Key": HEADER_KEY, "Cookie": f"session={COOKIE_SESSION}"}
    before = Sink.requests
    session = requests.post(f"{base}/sessions", json={}, headers=auth, timeout=10)
    assert session.status_code == 201, session.text
    created = requests.post(f"{base}/goals?type=karaoke&token={QUERY_TOKEN}", headers=auth, timeout=10,
                            json={"levels": [{"target": 30}], "context": {"session_id": session.json()["_id"]}})
    assert created.status_code == 202, created.text
    requests.get(f"{base}/nothing/password={PATH_PASSWORD}", headers=auth, timeout=10)
    requests.get(f"{base}/goals/{created.json()['goal_id']}", headers={"Authorization": f"Bearer {FORGED_JWT}"},
                 timeout=10)
    requests.get(f"{base}/metrics", auth=("ops", WRONG_PASSWORD), timeout=10)
    assert requests.get(f"{base}/metrics", auth=("ops", DASHBOARD_PASSWORD), timeout=10).status_code == 200
    # The event was sent and refused, and retried (RQ logs the failed job's traceback).
    api_support.wait_for(lambda: Sink.requests >= before + 2, timeout=60, what="the analytics sink's refusals")
    time.sleep(2)  # the worker's records of the last failure


def leaks(text: str, token: str) -> list[str]:
    return [secret for secret in secrets(token) if secret in text]


def test_no_secret_in_the_api_worker_horse_and_scheduler_logs_at_debug(tmp_path, sink):
    env = environment(tmp_path / "home", sink)
    token = mint_token(STREAMER, ["CREATOR"])
    processes = [
        api_support.ChildProcess("worker", "from goalhub.cli import main; main(['worker'])", env, tmp_path),
        api_support.ChildProcess("scheduler", "from goalhub.cli import main; main(['scheduler'])", env, tmp_path),
    ]
    try:
        server, base = api_support.start_api(env, tmp_path, workers=1, threads=4)
        processes.append(server)
        flow(base, token)
    finally:
        for process in processes:
            process.stop()
    logs = {process.name: process.log_path.read_text(errors="replace") for process in processes}
    # The files hold what they must for the grep to mean something: the request lines, the
    # horse's urllib3 DEBUG request to the sink and RQ's record of the failed job.
    assert '"role": "api"' in logs["api"] and "/goals" in logs["api"]
    assert "urllib3.connectionpool" in logs["worker"] and "/analytics?apikey=***" in logs["worker"]
    assert '"rq.worker"' in logs["worker"] and "503" in logs["worker"]
    assert '"role": "scheduler"' in logs["scheduler"]
    found = {name: leaks(text, token) for name, text in logs.items()}
    assert found == {name: [] for name in logs}, found


def test_no_secret_in_goalhub_ups_output_at_debug(tmp_path, sink):
    env = environment(tmp_path / "home", sink)
    env.pop("GOALHUB_REDIS_URL", None)  # up starts its own embedded Redis
    port = free_port()
    token = mint_token(STREAMER, ["CREATOR"])
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "goalhub", "up", "--port", str(port), "--workers", "1",
                               "--api-workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                assert up.poll() is None, log_path.read_text()
                try:
                    return requests.get(f"{base}/healthz", timeout=1).ok
                except requests.RequestException:
                    return False

            api_support.wait_for(healthy, timeout=60, what="goalhub up")
            flow(base, token)
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(up.pid, signal.SIGKILL)
                up.wait()
    text = log_path.read_text(errors="replace")
    records = [json.loads(line) for line in text.splitlines()]  # in JSON mode, up's every line is JSON
    assert {"api", "worker", "scheduler", "goalhub"} <= {record.get("role") for record in records}
    assert "/analytics?apikey=***" in text
    assert leaks(text, token) == [], leaks(text, token)
