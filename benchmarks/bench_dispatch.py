"""Dispatch: one ``goal.created`` through goalhub against a bare pluggy hook call and a bare blinker send.

    python benchmarks/bench_dispatch.py [--quick] [--json PATH]

The same N no-op receivers (N = 1, 5, 10, 20) are registered three ways: as goalhub receivers
(``@goalhub.receiver("goal.created")`` in a plugin registered on goalhub's manager), as the
same hookimpls on a bare ``pluggy.PluginManager``, and as receivers of a bare blinker signal.
goalhub's cost is measured in this process, on a temporary embedded Redis and embedded store,
the way a worker runs it: inside one RQ job (an in-process ``SimpleWorker``), ``signals.
leaderboards.send("goal.created", ...)`` -> ``goalhub.dispatch.deliver``: routing, the outcome
records in one batch, the events record, and per receiver the call inside its time budget and
the recorded ``ok``. The receivers are no-ops, so all of it is goalhub's own cost.

Every N is measured in each round, one after another (the machine drifts up to 2x within a
minute; measured N by N, the slope would be partly that drift). Figures are medians over the
rounds with [min - max], in microseconds.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import support
from support import Headline, Spread

N_VALUES = (1, 5, 10, 20)


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


def in_a_job(batch: list[dict[str, Any]]) -> float:
    """``support.send_events(batch)`` run as an RQ job by an in-process SimpleWorker: receivers run inline."""
    from rq import SimpleWorker

    from goalhub.connection import get_redis
    from goalhub.queues import all_queues, get_queue

    job = get_queue().enqueue(support.send_events, batch)
    SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="WARNING")
    assert all(q.count == 0 for q in all_queues()), "a receiver job was enqueued: not inline"
    return job.return_value()


class Setup:
    """The same ``n`` no-op receivers three ways: a goalhub plugin (registered only while its
    round is measured), hookimpls on a bare pluggy manager, receivers of a bare blinker signal."""

    def __init__(self, n: int) -> None:
        import blinker
        import pluggy

        from goalhub import hookspecs

        self.n = n
        self.module = noop_receivers(n)
        self.bare_pm = pluggy.PluginManager("goalhub")
        self.bare_pm.add_hookspecs(hookspecs)
        self.bare_pm.register(self.module)
        self.bare_signal = blinker.Signal()
        for _ in range(n):
            def blinker_noop(sender: str, **kwargs: Any) -> None:
                return None

            self.bare_signal.connect(blinker_noop, sender="goal.created", weak=False)

    def measure(self, goals: int, loops: int) -> dict[str, float]:
        """One repeat: µs per pluggy call, blinker send and goalhub event (inline, in a job)."""
        from goalhub import plugins
        from goalhub.receivers import receivers
        from goalhub.store import get_database

        name = plugins.register(self.module, name=f"bench_noops_{self.n}")
        try:
            ours = [r for r in receivers("goal.created") if r.plugin == name]
            assert len(ours) == self.n == len(receivers("goal.created")), "only the benchmark's receivers may be loaded"
            args = arguments()
            sample = {"pluggy": per_call(lambda: self.bare_pm.hook.goal_created(**args), loops),
                      "blinker": per_call(lambda: self.bare_signal.send("goal.created", **args), loops)}
            batch = [arguments() for _ in range(goals)]
            sample["inline"] = in_a_job(batch)
            done = get_database().outcomes.count_documents(
                {"goal_id": {"$in": [a["goal_id"] for a in batch]}, "status": "ok"})
            assert done == goals * self.n, f"expected {goals * self.n} ok outcomes, found {done}"
        finally:
            plugins.unregister(name)
        return sample


def measure(repeats: int, goals: int, loops: int) -> dict[int, dict[str, Spread]]:
    """Every N in each round, one after another, so that the machine's drift (2x within a minute
    here) falls on all N alike and the slope between them is not a drift between two moments."""
    setups = [Setup(n) for n in N_VALUES]
    samples: dict[int, dict[str, list[float]]] = {n: {"pluggy": [], "blinker": [], "inline": []} for n in N_VALUES}
    for repeat in range(repeats + 1):  # the first round is a warm-up: first jobs, first connections
        for setup in setups:
            sample = setup.measure(goals, loops)
            if repeat:
                for key, value in sample.items():
                    samples[setup.n][key].append(value)
        support.log(f"dispatch: round {repeat}/{repeats}" + (" (warm-up)" if not repeat else ""))
    return {n: {key: Spread.of(values) for key, values in by_key.items()} for n, by_key in samples.items()}


def worker_logs(path: Path) -> None:
    """Log as a worker does (``goalhub worker``: JSON lines at INFO), into ``path``: the lines a
    delivery writes are part of what it costs."""
    import logging

    from goalhub import logs

    logs.configure("worker")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(path.open("a"))


def main() -> None:
    options = support.arguments(__doc__)
    repeats, goals, loops = (3, 10, 1000) if options.quick else (9, 20, 3000)
    with support.temporary_home(load_plugins=(), disabled=("goalhub.lifecycle",)):
        from goalhub.store import get_database

        assert get_database().outcomes.count_documents({}) == 0
        worker_logs(Path(os.environ["GOALHUB_HOME"]) / "worker.log")
        results = measure(repeats, goals, loops)
        ledger_costs = measure_ledger(get_database(), repeats)

    print(f"## Dispatch: one goal.created, N no-op receivers, inline in one RQ job ({repeats} rounds of "
          f"{goals} events per N, every N in each round; pluggy/blinker {loops} calls per repeat)\n")
    print(support.table(
        ["N", "pluggy hook call", "blinker send", "goalhub event, inline"],
        [[n, r["pluggy"].fmt(), r["blinker"].fmt(), r["inline"].fmt(0)] for n, r in results.items()],
        title="Microseconds per call, send or event; median [min - max]",
    ))
    rows, headlines = [], []
    first, last = min(results), max(results)
    marginal = (results[last]["inline"].median - results[first]["inline"].median) / (last - first)
    for n, r in results.items():
        pluggy_each = r["pluggy"].median / n
        blinker_each = r["blinker"].median / n
        each = r["inline"].median / n
        rows.append([n, f"{pluggy_each:,.2f}", f"{blinker_each:,.2f}", f"{each:,.0f}", f"{each / pluggy_each:,.0f}x",
                     f"{each / blinker_each:,.0f}x"])
        headlines.append(Headline("dispatch", f"goal.created inline, µs per acting receiver, N={n} (all-in)",
                                  f"{each:,.0f} µs", f"pluggy {pluggy_each:,.2f} µs / blinker {blinker_each:,.2f} µs",
                                  f"goal <= 300 µs: {'meets' if each <= 300 else 'misses'}"))
    headlines.append(Headline("dispatch", f"goal.created inline, marginal µs per added receiver (N={first}..{last})",
                              f"{marginal:,.0f} µs", "was 6,000 µs (a job per receiver)",
                              f"goal <= 300 µs: {'meets' if marginal <= 300 else 'misses'}"))
    print(support.table(
        ["N", "pluggy", "blinker", "goalhub inline", "ratio vs pluggy", "ratio vs blinker"],
        rows, title="Per receiver, microseconds (medians): goalhub = event / N (routing, batch records, "
                    "events record, budget, call, ok)",
    ))
    print(f"Marginal cost of one more acting receiver (slope from N={first} to N={last}): {marginal:,.0f} µs: "
          "its share of the batch insert of the outcome records (written running: taken by this work-horse), "
          "the budget's timer, the call, its ledger entry (one store upsert), its share of the one bulk write of "
          "the event's ok outcomes and its metrics. The fixed part per event is the batch insert, the events "
          "record, that bulk write's transaction and one JSON log line for the receivers that ran ok (logged as "
          "a worker logs: INFO, JSON, to a file).\n")
    write, read, update = ledger_costs
    print(f"The ledger (goalhub.ledger, exactly-once past retention), in that figure: its write per ok receiver "
          f"{write.fmt(0)} µs (one upsert of the goal's `delivered` document) and its read per delivered event "
          f"{read.fmt(0)} µs (one find by _id), against the outcome's own ok write {update.fmt(0)} µs (its share of "
          f"the event's bulk write of 10), on the "
          f"embedded store, {repeats} rounds of 200 goals x 10 receivers.\n")
    headlines.append(Headline("dispatch", "ledger: store write per ok receiver; read per delivered event",
                              f"{write.median:,.0f} µs; {read.median:,.0f} µs",
                              f"the outcome's own ok write {update.median:,.0f} µs (a bulk of 10)",
                              f"{write.median / update.median:.2f}x the outcome's ok write"))
    support.write_headlines(options.json, headlines)


def measure_ledger(db: Any, repeats: int) -> tuple[Spread, Spread, Spread]:
    """µs of ``ledger.finish`` per receiver (10 receivers on each of 200 goals), of
    ``ledger.finished`` per event, and of an outcome's ok write (the baseline: its share of its
    event's bulk write, as ``goalhub.dispatch`` writes them), per round."""
    from bson import ObjectId

    from goalhub import ledger, store

    writes, reads, updates = [], [], []
    for _ in range(repeats):
        goal_ids = [str(ObjectId()) for _ in range(200)]
        # The baseline: the outcome's own ok write, the write the ledger's sits beside (an event's
        # 10 in one bulk write).
        keys = [[f"bench:{goal_id}|r{receiver}" for receiver in range(10)] for goal_id in goal_ids]
        db.outcomes.insert_many([{"_id": key, "status": "running"} for event in keys for key in event])
        began = time.perf_counter()
        for event in keys:
            store.update_each(db.outcomes, [({"_id": key}, {"$set": {"status": "ok", "result": None,
                                                                      "finished_at": time.time()}}) for key in event])
        updates.append((time.perf_counter() - began) / 2000 * 1e6)
        keys = [key for event in keys for key in event]
        db.outcomes.delete_many({"_id": {"$in": keys}})
        began = time.perf_counter()
        for goal_id in goal_ids:
            for receiver in range(10):
                ledger.finish(db, goal_id, "goal.created", f"bench.receiver_{receiver}")
        writes.append((time.perf_counter() - began) / 2000 * 1e6)
        began = time.perf_counter()
        for goal_id in goal_ids:
            ledger.finished(db, goal_id)
        reads.append((time.perf_counter() - began) / 200 * 1e6)
    return Spread.of(writes), Spread.of(reads), Spread.of(updates)


if __name__ == "__main__":
    main()
