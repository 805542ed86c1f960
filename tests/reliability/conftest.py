"""Fixtures of the reliability tests."""

from __future__ import annotations

import pytest

from . import support


@pytest.fixture(params=support.WORKER_KINDS)
def worker_kind(request) -> str:
    """Each test that starts workers runs once per kind: a forking worker and a pool (``support.WORKERS``)."""
    return request.param


@pytest.fixture
def faults(tmp_path, use_plugins, worker_kind):
    """Real plugins plus the fault plugin in worker processes; outbound calls to a local server.
    ``faults.worker(name, **env)`` starts a worker of ``worker_kind`` (``faults.kind``); ``held``
    waits for markers."""
    use_plugins(*support.PLUGINS)
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    outbound = support.OutboundServer()
    processes: list = []

    class Faults:
        dir = fault_dir
        server = outbound
        kind = worker_kind
        code = support.WORKERS[worker_kind]

        def worker(self, name: str, worker_name: str | None = None, **extra: str):
            # The held receivers wait for the test at the gate: no budget of a few seconds stops them.
            budgets = {"GOALHUB_RECEIVER_BUDGET__FAULT_PLUGIN_HELD_RECEIVER": "60",
                       "GOALHUB_RECEIVER_BUDGET__FAULT_PLUGIN_ISOLATED_RECEIVER": "60"}
            environment = support.env(GOALHUB_PLUGINS="fault_plugin", GOALHUB_TEST_FAULT_DIR=str(fault_dir),
                                      **outbound.environment(), **{**budgets, **extra})
            code = support.named_worker(worker_name) if worker_name else self.code
            process = support.start(name, code, environment, tmp_path)
            processes.append(process)
            return process

        def held(self, prefix: str, count: int = 1) -> list[int]:
            return support.wait_for(lambda: (lambda pids: pids if len(pids) >= count else None)(
                support.markers(fault_dir, prefix)), timeout=30, what=f"{prefix} marker")

        def release(self) -> None:
            (fault_dir / "gate").write_text("open")

    try:
        yield Faults()
    finally:
        (fault_dir / "gate").write_text("open")
        for process in processes:
            process.stop()
        outbound.stop()
        for process in processes:
            print(f"--- {process.name} ---\n{process.output()}")
