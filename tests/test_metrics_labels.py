"""No client text becomes a metric label (issue 22, row 1): a burst of requests with random
methods (up to 60 KB, which waitress accepts) and random paths, without credentials, against
the real server; the number of series and the size of ``/metrics`` stay bounded, and so do
the request log lines."""

from __future__ import annotations

import json
import random
import socket
import string
from concurrent.futures import ThreadPoolExecutor

import api_support
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.e2e]

DASHBOARD = ("ops", "a long dashboard password")


def raw_request(port: int, method: str, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass


def http_series(text: str) -> set[tuple]:
    return {tuple(sorted(sample.labels.items())) for family in text_string_to_metric_families(text)
            if family.name == "goalhub_http_requests" for sample in family.samples
            if sample.name == "goalhub_http_requests_total"}


def test_a_burst_of_random_methods_and_paths_leaves_the_metrics_and_the_log_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", DASHBOARD[0])
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", DASHBOARD[1])
    monkeypatch.setenv("GOALHUB_LOG_FORMAT", "json")
    env = api_support.process_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    server, base = api_support.start_api(env, tmp_path, workers=1, threads=4)
    try:
        port = int(base.rsplit(":", 1)[1])
        baseline = requests.get(f"{base}/metrics", auth=DASHBOARD, timeout=10)
        rng = random.Random(22)
        burst = [("X" + "".join(rng.choices(string.ascii_uppercase, k=8000)),
                  "/" + "".join(rng.choices(string.ascii_lowercase, k=40))) for _ in range(300)]
        burst += [("".join(rng.choices(string.ascii_uppercase, k=60_000)), "/healthz") for _ in range(20)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda request: raw_request(port, *request), burst))
        scraped = requests.get(f"{base}/metrics", auth=DASHBOARD, timeout=30)
    finally:
        server.stop()
    series = http_series(scraped.text)
    print(f"\nmetric series (goalhub_http_requests_total): {len(http_series(baseline.text))} -> {len(series)}; "
          f"/metrics {len(baseline.content)} -> {len(scraped.content)} bytes")
    assert {dict(labels)["method"] for labels in series} <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD",
                                                             "OPTIONS", "other"}
    assert {dict(labels)["route"] for labels in series} <= {"/healthz", "/metrics", "unmatched"}
    assert len(series) <= 10, sorted(series)
    assert len(scraped.content) < len(baseline.content) + 8192
    lines = server.log_path.read_text().splitlines()
    requests_logged = [json.loads(line) for line in lines if '"goalhub.api.requests"' in line]
    assert len(requests_logged) >= 300
    assert max(len(line) for line in lines) < 2048
