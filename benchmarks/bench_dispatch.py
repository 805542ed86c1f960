"""Dispatch: one ``goal.created`` through goalhub against a bare pluggy hook call and a bare blinker send.

    python benchmarks/bench_dispatch.py [--quick] [--json PATH]

The same N no-op receivers (N = 1, 5, 10) are registered three ways: as goalhub receivers
(``@goalhub.receiver("goal.created")`` in a plugin registered on goalhub's manager), as the
same hookimpls on a bare ``pluggy.PluginManager``, and as receivers of a bare blinker signal.
goalhub's cost is measured in its parts, in this process, on a temporary embedded Redis and
embedded store:

- deliver: ``signals.leaderboards.send("goal.created", ...)`` -> ``goalhub.dispatch.deliver``:
  routing, one outcome record per receiver (upsert + read back), one RQ job per receiver;
- run_receiver: the receiver job's body called directly (no RQ): claim the outcome, call the
  receiver, record ``ok``;
- the receiver jobs executed by an in-process RQ ``SimpleWorker`` (no fork), beside the same
  worker draining as many no-op RQ jobs (RQ's own floor).

Figures are medians over repeats with [min - max], in microseconds.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any

import support
from support import Headline, Spread

N_VALUES = (1, 5, 10)


def noop_receivers(n: int) -> types.ModuleType:
    """A plugin module with ``n`` no-op goal.created receivers, each with its own name."""
    from goalhub.hookspecs import receiver

    module = types.ModuleType(f"bench_noops_{n}")
    for i in range(n):
        def noop(goal_id: str, _cls: str) -> None:
            return None

        noop.__name__ = noop.__qualname__ = f"noop_{i}"
        setattr(module, noop.__name__, receiver("goal.created")(noop))
    return module


def arguments() -> dict[str, Any]:
    from bson import ObjectId

    return {"goal_id": str(ObjectId()), "active": True, "_cls": "KaraokeGoal",
            "conditions": {"session_id": str(ObjectId())}, "context": {"type": "karaoke"},
            "levels": [{"target": 100}], "nbf": None, "exp": None}


def per_call(function: Callable[[], Any], loops: int) -> float:
    """Microseconds per call over ``loops`` calls."""
    start = time.perf_counter()
    for _ in range(loops):
        function()
    return (time.perf_counter() - start) / loops * 1e6


def drain() -> float:
    """Seconds for an in-process SimpleWorker to run every queued job."""
    from rq import SimpleWorker

    from goalhub.connection import get_redis
    from goalhub.queues import all_queues

    start = time.perf_counter()
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="WARNING")
    return time.perf_counter() - start


def measure(n: int, repeats: int, goals: int, loops: int) -> dict[str, Spread]:
    import blinker
    import pluggy

    from goalhub import hookspecs, plugins, signals
    from goalhub.dispatch import outcome_id, receivers
    from goalhub.queues import all_queues, get_queue

    module = noop_receivers(n)
    name = plugins.register(module, name=f"bench_noops_{n}")
    bare_pm = pluggy.PluginManager("goalhub")
    bare_pm.add_hookspecs(hookspecs)
    bare_pm.register(module)
    bare_signal = blinker.Signal()
    for _ in range(n):
        def blinker_noop(sender: str, **kwargs: Any) -> None:
            return None

        bare_signal.connect(blinker_noop, sender="goal.created", weak=False)
    ours = [r for r in receivers("goal.created") if r.plugin == name]
    assert len(ours) == n == len(receivers("goal.created")), "only the benchmark's receivers may be loaded"

    samples: dict[str, list[float]] = {k: [] for k in (
        "pluggy", "blinker", "deliver", "run_receiver", "worker_job", "noop_enqueue", "noop_job")}
    args = arguments()
    try:
        for repeat in range(repeats + 1):  # the first is a warm-up: first jobs, first connections
            if repeat == 1:
                samples = {key: [] for key in samples}
            samples["pluggy"].append(per_call(lambda: bare_pm.hook.goal_created(**args), loops))
            samples["blinker"].append(per_call(lambda: bare_signal.send("goal.created", **args), loops))

            # deliver, then the receiver jobs through an in-process SimpleWorker.
            batch = [arguments() for _ in range(goals)]
            start = time.perf_counter()
            for event_args in batch:
                signals.leaderboards.send("goal.created", **event_args)
            samples["deliver"].append((time.perf_counter() - start) / goals * 1e6)
            jobs = get_queue().count
            assert jobs == goals * n, f"expected {goals * n} receiver jobs, found {jobs}"
            samples["worker_job"].append(drain() / jobs * 1e6)

            # run_receiver's body alone: deliver (not timed), drop the RQ jobs, call it directly.
            batch = [arguments() for _ in range(goals)]
            for event_args in batch:
                signals.leaderboards.send("goal.created", **event_args)
            for queue in all_queues():
                queue.empty()
            keys = [outcome_id(f"goal.created:{a['goal_id']}", r) for a in batch for r in ours]
            from goalhub.dispatch import run_receiver

            start = time.perf_counter()
            for key in keys:
                result = run_receiver(key)
            samples["run_receiver"].append((time.perf_counter() - start) / len(keys) * 1e6)
            assert result is None, result

            # RQ's floor: as many no-op jobs, enqueued and drained by the same kind of worker.
            queue = get_queue()
            start = time.perf_counter()
            for _ in range(goals * n):
                queue.enqueue(support.noop)
            samples["noop_enqueue"].append((time.perf_counter() - start) / (goals * n) * 1e6)
            samples["noop_job"].append(drain() / (goals * n) * 1e6)
    finally:
        plugins.unregister(name)
    return {key: Spread.of(values) for key, values in samples.items()}


def main() -> None:
    options = support.arguments(__doc__)
    repeats, goals, loops = (3, 10, 1000) if options.quick else (5, 20, 3000)
    results: dict[int, dict[str, Spread]] = {}
    with support.temporary_home(load_plugins=(), disabled=("goalhub.lifecycle",)):
        from goalhub.store import get_database

        assert get_database().outcomes.count_documents({}) == 0
        for n in N_VALUES:
            results[n] = measure(n, repeats, goals, loops)
            support.log(f"dispatch: measured N={n}")

    print(f"## Dispatch: one goal.created, N no-op receivers ({repeats} repeats of {goals} goals; "
          f"pluggy/blinker {loops} calls per repeat)\n")
    print(support.table(
        ["N", "pluggy hook call", "blinker send", "goalhub deliver", "run_receiver (direct)",
         "goalhub job (SimpleWorker)", "no-op RQ job (SimpleWorker)", "no-op enqueue"],
        [[n, r["pluggy"].fmt(), r["blinker"].fmt(), r["deliver"].fmt(0), r["run_receiver"].fmt(0),
          r["worker_job"].fmt(0), r["noop_job"].fmt(0), r["noop_enqueue"].fmt(0)] for n, r in results.items()],
        title="Microseconds: per call or send (pluggy, blinker, deliver), per job (the rest); median [min - max]",
    ))
    rows, headlines = [], []
    for n, r in results.items():
        pluggy_each = r["pluggy"].median / n
        blinker_each = r["blinker"].median / n
        deliver_each = r["deliver"].median / n
        total_each = deliver_each + r["worker_job"].median
        rows.append([n, f"{pluggy_each:,.2f}", f"{blinker_each:,.2f}", f"{deliver_each:,.0f}",
                     f"{r['worker_job'].median:,.0f}", f"{total_each:,.0f}", f"{total_each - pluggy_each:,.0f}",
                     f"{total_each / pluggy_each:,.0f}x", f"{total_each / blinker_each:,.0f}x",
                     f"{(deliver_each + r['run_receiver'].median) / pluggy_each:,.0f}x"])
        headlines.append(Headline("dispatch", f"goal.created, µs per receiver, N={n} (deliver + SimpleWorker job)",
                                  f"{total_each:,.0f} µs", f"pluggy {pluggy_each:,.2f} µs / blinker {blinker_each:,.2f} µs",
                                  f"{total_each / pluggy_each:,.0f}x pluggy"))
    print(support.table(
        ["N", "pluggy", "blinker", "goalhub deliver", "goalhub job", "goalhub total", "overhead vs pluggy",
         "ratio vs pluggy", "ratio vs blinker", "ratio vs pluggy, no RQ worker"],
        rows, title="Per receiver, microseconds (medians): goalhub total = deliver / N + one job on a SimpleWorker",
    ))
    print("deliver = routing + outcome upsert and read-back + an RQ job per receiver (Redis enqueue); "
          "run_receiver (direct) = claim the outcome, call the receiver, record ok, without RQ; "
          "'no RQ worker' uses deliver / N + run_receiver. No fork anywhere: a forking worker adds "
          "a fork per job (see bench_e2e).\n")
    support.write_headlines(options.json, headlines)


if __name__ == "__main__":
    main()
