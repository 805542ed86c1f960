"""Scaling with receivers: exclusive goals/s through the real stack with 0, 5, 10 and 20 extra
no-op ``goal.created`` receivers installed as plugins, and the drop per added receiver.

    python benchmarks/bench_receivers.py [--quick] [--json PATH]

A temporary GOALHUB_HOME with its own embedded Redis and store, the real plugins, the API server
(waitress) and one forking worker, as in bench_e2e. For each K the extra receivers are a plugin
module written to a temporary directory and loaded by goalhub's plugin loader
(``GOALHUB_PLUGINS``) in the API and the worker, which are restarted for each K. Goals/s from
the first POST to the last outcome of every receiver (the extras included), and, less exposed
to the HTTP side and to other load on the machine, the median run time of the ``create_goal``
jobs in the worker: the drop per receiver is taken from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bench_e2e
import support
from support import Headline, Spread

EXTRAS = (0, 5, 10, 20)


def write_plugin(directory: Path, count: int) -> str:
    """A plugin module with ``count`` no-op receivers of every goal class; returns its name."""
    name = f"bench_extra_receivers_{count}"
    lines = ["import goalhub", ""]
    for i in range(count):
        lines += ["", "@goalhub.receiver('goal.created')", f"def extra_{i}(goal_id):", "    return None", ""]
    (directory / f"{name}.py").write_text("\n".join(lines))
    return name


def main() -> None:
    options = support.arguments(__doc__)
    repeats, goals = (3, 30) if options.quick else (3, 60)
    import os

    results: dict[int, Spread] = {}
    create_ms: dict[int, Spread] = {}
    with support.temporary_home(load_plugins=support.REAL_PLUGINS) as home:
        from goalhub import plugins
        from goalhub.auth import mint_token
        from goalhub.receivers import receivers
        from goalhub.store import get_database

        db = get_database()
        token = mint_token(support.STREAMER, ["CREATOR"])
        extra_dir = Path(home) / "extra-plugins"
        extra_dir.mkdir()
        base_path = os.environ.get("PYTHONPATH", "")
        for count in EXTRAS:
            module = write_plugin(extra_dir, count)
            os.environ["GOALHUB_PLUGINS"] = module
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_dir), base_path) if p)
            import sys

            sys.path.insert(0, str(extra_dir))
            plugins.reset()
            n_receivers = len(receivers("goal.created"))
            api, base = support.start_api(home, workers=2, threads=4)
            client = bench_e2e.Client(base, token)
            with support.children(api, *support.start_workers(1, home, tag=f"k{count}-")):
                bench_e2e.throughput_run(db, client, 10, n_receivers)  # warm-up: every API process, first jobs
                runs = [bench_e2e.throughput_run(db, client, goals, n_receivers) for _ in range(repeats)]
            results[count] = Spread.of(r["goals_per_s"] for r in runs)
            create_ms[count] = Spread.of(r["create_ms"] for r in runs)
            support.log(f"receivers: +{count}: {results[count].fmt(2)} goals/s, create_goal {create_ms[count].fmt(1)} ms "
                        f"({n_receivers} receivers)")
    _report(results, create_ms, repeats, goals, options.json)


def _report(results: dict[int, Spread], create_ms: dict[int, Spread], repeats: int, goals: int,
            json_path: Any) -> None:
    print(f"## Scaling with receivers: exclusive goals, 1 forking worker, K extra no-op receivers installed "
          f"as a plugin ({repeats} repeats of {goals} goals)\n")
    base_ms = create_ms[0].median
    rows = []
    for count, spread in results.items():
        # A worker's goal capacity is 1 / the create_goal job's time: its drop per receiver.
        drop = (1 - base_ms / create_ms[count].median) * 100
        rows.append([count, spread.fmt(2), create_ms[count].fmt(1), f"{drop:.1f}%",
                     f"{drop / count:.2f}%" if count else "-"])
    print(support.table(["extra receivers", "goals/s (HTTP -> last outcome)", "create_goal job ms",
                         "capacity drop vs 0", "drop per receiver"], rows, title="Median [min - max]"))
    top = max(results)
    per_receiver = (1 - base_ms / create_ms[top].median) * 100 / top
    added_ms = (create_ms[top].median - base_ms) / top
    print(f"Per added receiver (from 0 to {top}): +{added_ms:.2f} ms per create_goal job, a drop of "
          f"{per_receiver:.2f}% of a worker's goals/s. Each extra receiver acts on every goal, so it runs inline in "
          "each goal's create_goal job with its own outcome record. The HTTP goals/s column also carries the API "
          "server and the client on the same 2 cores, and other load on the machine.\n")
    support.write_headlines(json_path, [Headline(
        "receivers", f"create_goal job ms with 0 / {' / '.join(str(k) for k in results if k)} extra no-op receivers",
        " / ".join(f"{s.median:.1f}" for s in create_ms.values()) + " ms",
        f"HTTP goals/s {' / '.join(f'{s.median:.1f}' for s in results.values())}",
        f"{per_receiver:.2f}% per receiver (goal <= 3%)")])


if __name__ == "__main__":
    main()
