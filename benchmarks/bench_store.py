"""Benchmark the embedded SQLite document store against mongomock and montydb.

    python benchmarks/bench_store.py [--quick]

Single-process: find_one by ``_id``, find_one by an indexed field and update_one ``$inc`` by
``_id`` at 100, 10,000 and 100,000 documents (``--quick``: 100 and 10,000). Each figure is the
median of 5 timed repeats (min and max beside it), in operations per second, with its ratio to
mongomock measured in the same run (the in-memory floor). montydb has no working indexes
(its ``create_index`` is a no-op), so its "indexed" lookup is a scan; a backend whose load takes
longer than LOAD_CAP seconds is reported as n/a. Then 3 processes each do 300 ``$inc`` on one
document: throughput and how many updates were lost.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import mongomock  # noqa: E402
from bson import ObjectId  # noqa: E402
from montydb import MontyClient, set_storage  # noqa: E402

from goalhub.sqlite_store import SQLiteClient  # noqa: E402

REPEATS = 5
OPS_PER_REPEAT = 2000
SECONDS_PER_REPEAT = 0.3  # slow backends stop early: the rate stays honest, the run stays short
LOAD_CAP = 20.0
BACKENDS = ["sqlite", "mongomock", "montydb"]
LABELS = {"sqlite": "embedded sqlite", "mongomock": "mongomock", "montydb": "montydb (sqlite)"}
PROCS, INCS = 3, 300


def open_db(kind: str, root: Path) -> Any:
    if kind == "sqlite":
        return SQLiteClient(root / "sqlite")["bench"]
    if kind == "mongomock":
        return mongomock.MongoClient()["bench"]
    if not (root / "monty").exists():  # configure once: concurrent set_storage calls race on its file
        set_storage(str(root / "monty"), storage="sqlite", use_bson=True)  # ObjectId ids need real BSON
    return MontyClient(str(root / "monty"))["bench"]


def make_docs(n: int) -> list[dict]:
    return [{"_id": ObjectId(), "slug": f"goal-{i}", "n": i, "status": "open" if i % 3 else "met",
             "tags": ["a", f"t{i % 7}"], "meta": {"owner": f"user-{i % 100}", "target": i * 10}}
            for i in range(n)]


def load(coll: Any, docs: list[dict]) -> float | None:
    """Seconds to index and insert the documents, or None once it passes LOAD_CAP."""
    start = time.perf_counter()
    coll.create_index("slug")
    for i in range(0, len(docs), 1000):
        coll.insert_many([dict(d) for d in docs[i:i + 1000]])
        if time.perf_counter() - start > LOAD_CAP:
            return None
    return time.perf_counter() - start


def rate(op: Callable[[Any], Any], keys: list) -> tuple[float, float, float]:
    """(median, min, max) operations per second over REPEATS timed repeats."""
    rates = []
    for i in range(REPEATS + 1):
        start, done = time.perf_counter(), 0
        while done < OPS_PER_REPEAT and (done == 0 or time.perf_counter() - start < SECONDS_PER_REPEAT):
            op(keys[done % len(keys)])
            done += 1
        if i:  # round 0 only warms caches up
            rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates), min(rates), max(rates)


def ops(coll: Any) -> dict[str, Callable[[Any], Any]]:
    def by_id(doc: dict) -> None:
        assert coll.find_one({"_id": doc["_id"]}) is not None

    def by_slug(doc: dict) -> None:
        assert coll.find_one({"slug": doc["slug"]}) is not None

    def inc(doc: dict) -> None:
        coll.update_one({"_id": doc["_id"]}, {"$inc": {"n": 1}})

    return {"find_one by _id": by_id, "find_one by indexed field": by_slug, "update_one $inc by _id": inc}


def single_process(sizes: list[int]) -> None:
    results: dict[tuple[str, int, str], tuple[float, float, float] | None] = {}
    loads: dict[tuple[str, int], float | None] = {}
    for n in sizes:
        docs = make_docs(n)
        keys = random.Random(n).sample(docs, min(n, 1000))
        for kind in BACKENDS:
            with tempfile.TemporaryDirectory() as tmp:
                coll = open_db(kind, Path(tmp)).goals
                loads[kind, n] = load(coll, docs)
                gc.collect()
                gc.freeze()  # keep the collector from walking the benchmark's own documents while timing
                for name, op in ops(coll).items():
                    results[kind, n, name] = rate(op, keys) if loads[kind, n] is not None else None
                gc.unfreeze()
                if kind == "sqlite":
                    coll.database.client.close()
            print(f"  measured {LABELS[kind]:<17} at {n:>7,} docs", file=sys.stderr)

    print(f"\nSingle process, ops/s: median of {REPEATS} [min - max], and ratio to mongomock\n")
    print(f"{'operation':<27}{'docs':>8}  {'backend':<18}{'load s':>8}  {'median':>9}  {'[min - max]':<21}{'vs mongomock':>14}")
    for name in ops(None):
        for n in sizes:
            floor = results["mongomock", n, name]
            for kind in BACKENDS:
                r, secs = results[kind, n, name], loads[kind, n]
                if r is None:
                    print(f"{name:<27}{n:>8,}  {LABELS[kind]:<18}{'n/a':>8}  n/a (took > {LOAD_CAP:.0f}s to load)")
                    continue
                ratio = f"{r[0] / floor[0]:.2f}x" if floor else "-"
                print(f"{name:<27}{n:>8,}  {LABELS[kind]:<18}{secs:>8.2f}  {r[0]:>9,.0f}  "
                      f"[{r[1]:>8,.0f} - {r[2]:>8,.0f}]{ratio:>14}")
        print()


def _inc_worker(kind: str, root: str, start: Any, errors: Any) -> None:
    failed = 0
    try:
        coll = open_db(kind, Path(root)).counters
        start.wait(30)
        for _ in range(INCS):
            try:
                coll.update_one({"_id": "c"}, {"$inc": {"n": 1}})
            except Exception:  # e.g. "database is locked": the update is lost, keep going
                failed += 1
    finally:
        errors.put(failed)


def concurrent(kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        coll = open_db(kind, Path(tmp)).counters
        coll.insert_one({"_id": "c", "n": 0})
        ctx = multiprocessing.get_context("fork")
        start, errors = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_inc_worker, args=(kind, tmp, start, errors)) for _ in range(PROCS)]
        for p in procs:
            p.start()
        time.sleep(0.5)  # let every worker open its client before the clock starts
        began = time.perf_counter()
        start.set()
        failed = sum(errors.get(timeout=120) for _ in procs)
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - began
        kept = open_db(kind, Path(tmp)).counters.find_one({"_id": "c"})["n"]
    total = PROCS * INCS
    print(f"{LABELS[kind]:<18}{total / elapsed:>10,.0f}  {total - kept:>5} of {total} lost"
          f"{f' ({failed} raised)' if failed else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 and 10,000 documents only")
    args = parser.parse_args()
    began = time.perf_counter()
    single_process([100, 10_000] if args.quick else [100, 10_000, 100_000])
    print(f"Concurrent: {PROCS} processes x {INCS} update_one $inc on one document\n")
    print(f"{'backend':<18}{'ops/s':>10}  updates lost")
    for kind in ("sqlite", "montydb"):
        concurrent(kind)
    print(f"\ntotal run time {time.perf_counter() - began:.0f}s")


if __name__ == "__main__":
    main()
