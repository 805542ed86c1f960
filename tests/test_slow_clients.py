"""Issue 12, rows 1 and 9 against the real API server (``goalhub.api.serve``, 2 processes x 4
threads, as ``goalhub up`` runs it): slow-header clients hold no thread, and a chunked body
over the limit is a 413.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import api_support
import pytest
import requests

from goalhub.auth import mint_token

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 64


@pytest.fixture
def server(tmp_path) -> Iterator[str]:
    process, base = api_support.start_api(api_support.process_env(), tmp_path, workers=2, threads=4)
    try:
        yield base
    finally:
        process.stop()


def hold_slow_clients(base: str, count: int, stop: threading.Event, period: float = 1.0) -> list[socket.socket]:
    """``count`` connections that send a request line and then one header line per ``period``,
    never finishing their headers, until ``stop`` (a bounded attack: the caller sets it)."""
    parts = urlsplit(base)
    held = []
    for _ in range(count):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)

    def trickle() -> None:
        line = 0
        while not stop.wait(period):
            line += 1
            for sock in held:
                try:
                    sock.sendall(f"X-Slow-{line}: 1\r\n".encode())
                except OSError:
                    pass

    threading.Thread(target=trickle, name="slow-clients", daemon=True).start()
    return held


def healthz_latencies(base: str, seconds: float, timeout: float = 8.0) -> list[float]:
    """Time fresh-connection ``GET /healthz`` calls for ``seconds``; a timeout counts as ``timeout``."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            ok = requests.get(f"{base}/healthz", timeout=timeout, headers={"Connection": "close"}).ok
        except requests.RequestException:
            ok = False
        latencies.append(time.perf_counter() - started if ok else timeout)
        time.sleep(0.1)
    return latencies


def test_64_slow_header_clients_do_not_stop_healthz(server):
    quiet = healthz_latencies(server, 1.5)
    stop = threading.Event()
    held = hold_slow_clients(server, SLOW_CLIENTS, stop)
    try:
        time.sleep(1.5)  # the attack is under way: every client has sent at least one more line
        attacked = healthz_latencies(server, 5.0)
    finally:
        stop.set()
        for sock in held:
            sock.close()
    print(f"/healthz without slow clients: median {statistics.median(quiet) * 1000:.1f} ms, "
          f"max {max(quiet) * 1000:.1f} ms; with {SLOW_CLIENTS} held: median "
          f"{statistics.median(attacked) * 1000:.1f} ms, max {max(attacked) * 1000:.1f} ms, {len(attacked)} calls")
    assert len(attacked) >= 20
    assert max(attacked) < 1.0, attacked
    assert statistics.median(attacked) < 0.1, attacked


def test_a_chunked_body_over_the_limit_is_a_413_not_a_truncated_201(server):
    token = mint_token("6800a9073e0c346531958b03")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = b'{"pad": "' + b"x" * 70_000 + b'"}'

    def chunks(data: bytes) -> Iterator[bytes]:  # a generator body: requests sends it chunked
        for start in range(0, len(data), 8192):
            yield data[start:start + 8192]

    chunked = requests.post(f"{server}/sessions", data=chunks(body), headers=headers, timeout=10)
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["error"]["code"] == "payload_too_large"
    sized = requests.post(f"{server}/sessions", data=body, headers=headers, timeout=10)
    assert sized.status_code == 413
    small = requests.post(f"{server}/sessions", data=chunks(b"{}"), headers=headers, timeout=10)
    assert small.status_code == 201, small.text
