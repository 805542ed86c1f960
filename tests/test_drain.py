"""Issue 24 item 3: a rolling restart of two API servers under a steady client loses no request.

Two real ``goalhub.api.serve`` servers (each a pre-fork parent and 2 processes) behind a
balancer written here the way nginx and an ALB behave: it sends each request, on a fresh
connection (nginx's default to an upstream), to the next server whose ``/readyz`` answered
200 at its last check (every 0.1 s), and tries the next server only when the connection is
refused (nothing was sent, so nginx's ``proxy_next_upstream error`` retries even a POST).
Anything else (a reset, a closed connection, a 5xx) is a lost request. Each server is then
stopped with SIGTERM, started again on its port and waited for, one after the other, while 4
clients create sessions steadily (about 50 a second each) and one slow client sends a body over a second that
spans the SIGTERM.
"""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace

import api_support
import pytest

from goalhub.auth import mint_token
from goalhub.store import get_database

pytestmark = pytest.mark.e2e

STREAMER = "6800a9073e0c346531958b03"


class Balancer:
    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.ready = dict.fromkeys(ports, False)
        self.turn = itertools.count()
        self.stop = threading.Event()
        self.results: Counter[str] = Counter()
        self.lost: list[str] = []
        self.lock = threading.Lock()
        self.checker = threading.Thread(target=self._check, daemon=True)
        self.checker.start()

    def _check(self) -> None:
        while not self.stop.is_set():
            for port in self.ports:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    conn.request("GET", "/readyz")
                    self.ready[port] = conn.getresponse().status == 200
                    conn.close()
                except OSError:
                    self.ready[port] = False
            time.sleep(0.1)

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str], slow: float = 0.0) -> int | None:
        """The status of a request, or None when it was lost (recorded)."""
        up = [port for port in self.ports if self.ready[port]] or self.ports
        start = next(self.turn)
        order = [up[(start + i) % len(up)] for i in range(len(up))]
        order += [port for port in self.ports if port not in order]
        for port in order:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.connect()
            except ConnectionRefusedError:
                continue  # never reached a server: the next one
            try:
                if slow:
                    conn.putrequest(method, path)
                    for name, value in {**headers, "Content-Length": str(len(body))}.items():
                        conn.putheader(name, value)
                    conn.endheaders()
                    for byte in body:
                        conn.send(bytes([byte]))
                        time.sleep(slow / len(body))
                else:
                    conn.request(method, path, body=body, headers=headers)
                status = conn.getresponse().status
            except OSError as exc:
                self._lose(f"{port}: {type(exc).__name__}: {exc}")
                return None
            finally:
                conn.close()
            with self.lock:
                self.results[str(status)] += 1
            if status >= 500:
                self._lose(f"{port}: HTTP {status}")
                return None
            return status
        self._lose("every server refused the connection")
        return None

    def _lose(self, what: str) -> None:
        with self.lock:
            self.lost.append(what)


def serve_on(port: int, env: dict[str, str], log_dir, generation: int) -> api_support.ChildProcess:
    return api_support.ChildProcess(f"api-{port}-{generation}",
                                    f"from goalhub.api import serve; serve('127.0.0.1', {port}, 2, 4)", env, log_dir)


@pytest.fixture
def servers(tmp_path) -> Iterator[SimpleNamespace]:
    env = api_support.process_env(GOALHUB_DRAIN_DELAY="1", GOALHUB_SHUTDOWN_GRACE="15",
                                  GOALHUB_RATE_LIMIT_SESSIONS="off")
    ports = [api_support.free_port(), api_support.free_port()]
    processes = {port: serve_on(port, env, tmp_path, 0) for port in ports}
    balancer = Balancer(ports)
    started = []
    try:
        api_support.wait_for(lambda: all(balancer.ready.values()), timeout=60, what="both servers ready")
        yield SimpleNamespace(ports=ports, processes=processes, balancer=balancer, env=env, log_dir=tmp_path,
                              started=started)
    finally:
        balancer.stop.set()
        for process in [*processes.values(), *started]:
            process.stop()
        for process in [*processes.values(), *started]:
            print(f"--- {process.name} ---\n{process.output()}")


def test_a_rolling_restart_of_both_servers_under_a_steady_client_loses_no_request(servers):
    balancer = servers.balancer
    headers = {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR', 'PLATFORM'])}",
               "Content-Type": "application/json"}
    body = json.dumps({"sources": [{"room_id": "room-1", "task_id": "task-1"}]}).encode()
    stop = threading.Event()

    def client() -> None:
        # Steady, not flat out: ~50 requests a second each keeps requests in flight at every
        # SIGTERM (the slow client's always) without spending the suite's CPU on thousands more.
        while not stop.is_set():
            balancer.send("POST", "/sessions", body, headers)
            stop.wait(0.02)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    slow_statuses = []
    try:
        for generation, port in enumerate(servers.ports, start=1):
            time.sleep(1.0)
            old = servers.processes[port]
            # A request whose body takes 1.5 s to arrive, under way when the SIGTERM lands.
            slow = threading.Thread(target=lambda: slow_statuses.append(
                balancer.send("POST", "/sessions", body, headers, slow=1.5)), daemon=True)
            slow.start()
            time.sleep(0.3)
            old.popen.send_signal(signal.SIGTERM)
            assert old.popen.wait(timeout=40) == 0, old.output()
            new = serve_on(port, servers.env, servers.log_dir, generation)
            servers.started.append(new)
            api_support.wait_for(lambda port=port: balancer.ready[port], timeout=60, what=f"{port} ready again")
            slow.join(timeout=30)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=40)
    assert balancer.lost == []
    assert slow_statuses == [201, 201]
    created = balancer.results["201"]
    print(f"{created} sessions created during the restarts")
    assert created > 50 and set(balancer.results) == {"201"}, balancer.results
    assert get_database().sessions.count_documents({}) == created  # every 201 is a stored session
    outputs = "".join(process.output() for process in servers.processes.values())
    assert "drained: every request answered" in outputs
