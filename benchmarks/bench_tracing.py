"""Traces: what a receiver costs with tracing off and on, measured in the same run.

    python benchmarks/bench_tracing.py [--quick] [--json PATH]

The same N no-op ``goal.created`` receivers (N = 1, 10, 20), run inline in one RQ job as a
worker runs them (bench_dispatch's setup: a job sends ``goal.created`` for a batch of goals;
each event writes its outcome records, runs its receivers, records each ``ok``), run by
goalhub's own in-process worker (``goalhub.worker.drain``: the job's span, and the flush of its
spans when it ends), in three modes, one after another in every round, so that the machine's
drift falls on all of them alike:

- **off**: no OTEL_* configuration (what every deployment without traces runs: one check of a
  module global per hook);
- **on, in memory**: ``goalhub.tracing`` with the SDK's ``InMemorySpanExporter`` behind its
  ``BatchSpanProcessor``: the spans themselves (job, event, one per receiver), their redacted
  attributes, the processor, and the flush at the job's end, but no export I/O;
- **on, OTLP/HTTP**: the same with the OTLP/HTTP exporter (``otlp``) sending to a local
  stand-in collector (another process answering 200): adds protobuf encoding and one HTTP
  request per job.

Each run is timed from the in-process worker's start to its end, the export at the job's end
included; the worker's own start and registration are the same in every mode.

Per receiver: the event's time / N at each N, and the slope from N=1 to N=20 (the marginal cost
of one more acting receiver). The on/off ratio is taken per round (the modes measured back to
back), median [min - max] over the rounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_dispatch
import support
from support import Headline, Spread

N_VALUES = (1, 10, 20)
MODES = ("off", "memory", "otlp")
MODE_NAMES = {"off": "off", "memory": "on, in memory", "otlp": "on, OTLP/HTTP"}
# goalhub's otel extra, where `make install` puts it (scripts/install_otel.py): outside the
# venv's path, so this process puts it on its own (last: the venv's packages first).
sys.path.append(str(Path(sys.prefix) / "otel"))

COLLECTOR = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
"""


def collector() -> tuple[subprocess.Popen, str]:
    """A stand-in OTLP/HTTP collector in its own process; its traces endpoint."""
    process = subprocess.Popen([sys.executable, "-c", COLLECTOR], stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())  # type: ignore[union-attr]
    return process, f"http://127.0.0.1:{port}/v1/traces"


def switch(mode: str, endpoint: str) -> Any:
    """Tracing as ``mode`` asks, in this process; returns the in-memory exporter (or None)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from goalhub import tracing

    tracing.reset()
    if mode == "off":
        assert not tracing.enabled()
        return None
    exporter = InMemorySpanExporter() if mode == "memory" else OTLPSpanExporter(endpoint=endpoint)
    assert tracing.configure("worker", exporters=[exporter])
    return exporter


def run_events(module: Any, n: int, goals: int) -> float:
    """µs per event: ``goals`` goal.created events, ``n`` inline receivers each, in one job, timed
    from the worker's start to its end (the job's spans exported at its end included)."""
    from goalhub import plugins
    from goalhub.queues import get_queue
    from goalhub.receivers import receivers
    from goalhub.store import get_database
    from goalhub.worker import drain

    name = plugins.register(module, name=f"bench_noops_{n}")
    try:
        assert len(receivers("goal.created")) == n, "only the benchmark's receivers may be loaded"
        batch = [bench_dispatch.arguments() for _ in range(goals)]
        get_queue().enqueue(support.send_events, batch)
        began = time.perf_counter()
        drain(scheduled=False, logging_level="WARNING")
        seconds = time.perf_counter() - began
        done = get_database().outcomes.count_documents(
            {"goal_id": {"$in": [a["goal_id"] for a in batch]}, "status": "ok"})
        assert done == goals * n, f"expected {goals * n} ok outcomes, found {done}"
        return seconds / goals * 1e6
    finally:
        plugins.unregister(name)


def measure(repeats: int, goals: int, endpoint: str) -> dict[str, dict[int, list[float]]]:
    modules = {n: bench_dispatch.noop_receivers(n) for n in N_VALUES}
    samples: dict[str, dict[int, list[float]]] = {mode: {n: [] for n in N_VALUES} for mode in MODES}
    spans_seen = 0
    for repeat in range(repeats + 1):  # the first round is a warm-up
        for n in N_VALUES:
            for mode in MODES:
                exporter = switch(mode, endpoint)
                value = run_events(modules[n], n, goals)
                if exporter is not None and mode == "memory":
                    # The job's span, and per event its span and one per receiver: all exported.
                    spans_seen = len(exporter.get_finished_spans())
                    assert spans_seen == 1 + goals * (1 + n), spans_seen
                if repeat:
                    samples[mode][n].append(value)
        support.log(f"tracing: round {repeat}/{repeats}" + (" (warm-up)" if not repeat else ""))
    switch("off", endpoint)
    return samples


def hooks_off(loops: int) -> tuple[float, float]:
    """µs of a hook with tracing off: ``tracing.enabled()`` (a receiver run, an outbound call) and
    ``with tracing.span(...)`` (an event)."""
    from goalhub import tracing

    tracing.reset()
    assert not tracing.enabled()
    checks = bench_dispatch.per_call(tracing.enabled, loops)

    def event() -> None:
        with tracing.span("goal.created", {"goalhub.event": "goal.created", "goalhub.goal_id": "x"}):
            pass

    return checks, bench_dispatch.per_call(event, loops)


def main() -> None:
    options = support.arguments(__doc__)
    repeats, goals = (3, 10) if options.quick else (9, 20)
    process, endpoint = collector()
    try:
        with support.temporary_home(load_plugins=(), disabled=("goalhub.lifecycle",)):
            bench_dispatch.worker_logs(Path(os.environ["GOALHUB_HOME"]) / "worker.log")
            samples = measure(repeats, goals, endpoint)
            off = hooks_off(100_000)
    finally:
        process.terminate()
        process.wait()
    report(samples, repeats, goals, options.json, off)


def slope(values: dict[int, float]) -> float:
    first, last = min(values), max(values)
    return (values[last] - values[first]) / (last - first)


def report(samples: dict[str, dict[int, list[float]]], repeats: int, goals: int, json_path: Any,
           off: tuple[float, float]) -> None:
    print(f"## Traces: N no-op receivers inline in one RQ job, tracing off and on ({repeats} rounds of {goals} "
          f"events per N and mode, every mode and N in each round)\n")
    events = {mode: {n: Spread.of(values) for n, values in by_n.items()} for mode, by_n in samples.items()}
    rows = []
    for n in N_VALUES:
        ratios = {mode: Spread.of(on / off for on, off in zip(samples[mode][n], samples["off"][n], strict=True))
                  for mode in MODES[1:]}
        rows.append([n, *(f"{events[mode][n].median / n:,.0f}" for mode in MODES),
                     *(ratios[mode].fmt(2) for mode in MODES[1:])])
    print(support.table(
        ["N", *(f"µs per receiver, {MODE_NAMES[m]}" for m in MODES), "on, in memory / off, per round",
         "on, OTLP/HTTP / off, per round"],
        rows, title="Per acting receiver: the event's time / N (medians), and the on/off ratio per round"))
    # The marginal receiver, per round (the slope from N=1 to N=20 within one round and mode).
    marginal = {mode: Spread.of(slope({n: samples[mode][n][i] for n in N_VALUES}) for i in range(repeats))
                for mode in MODES}
    added = {mode: Spread.of(slope({n: samples[mode][n][i] for n in N_VALUES})
                             - slope({n: samples["off"][n][i] for n in N_VALUES}) for i in range(repeats))
             for mode in MODES[1:]}
    print(support.table(
        ["mode", "marginal µs per added receiver", "added by tracing, per round"],
        [[MODE_NAMES[m], marginal[m].fmt(0), added[m].fmt(0) if m in added else "-"] for m in MODES],
        title=f"One more acting receiver (slope from N={min(N_VALUES)} to N={max(N_VALUES)}), median [min - max]"))
    print("Tracing on, each receiver run is one span (plugin, receiver, event, goal, attempt, outcome: strings "
          "redacted and bounded), beside its event's span and the job's; the job's spans are exported when it "
          "ends (a worker flushes after every job). Off, each hook checks one module global. The OTLP/HTTP mode "
          "sends each job's spans to a local stand-in collector (another process on the same 2 cores).\n")
    print(f"Off, a hook costs {off[0]:.2f} µs (`tracing.enabled()`, once per receiver run and outbound call) or "
          f"{off[1]:.2f} µs (`with tracing.span(...)`, once per event), and nothing of opentelemetry is imported "
          "by goalhub (tests/test_traces.py).\n")
    headlines = [Headline(
        "tracing", f"µs per acting receiver, N={max(N_VALUES)}: off / on (in memory) / on (OTLP/HTTP)",
        " / ".join(f"{events[m][max(N_VALUES)].median / max(N_VALUES):,.0f}" for m in MODES) + " µs",
        f"marginal receiver {marginal['off'].median:,.0f} µs off; +{added['memory'].median:,.0f} µs in memory, "
        f"+{added['otlp'].median:,.0f} µs OTLP",
        f"on/off per round at N={max(N_VALUES)}: "
        + ", ".join(f"{Spread.of(a / b for a, b in zip(samples[m][max(N_VALUES)], samples['off'][max(N_VALUES)], strict=True)).median:.2f}x"
                    f" ({MODE_NAMES[m].split(', ')[1]})" for m in MODES[1:]))]
    support.write_headlines(json_path, headlines)


if __name__ == "__main__":
    start = time.monotonic()
    main()
    support.log(f"bench_tracing: {time.monotonic() - start:.0f}s")
