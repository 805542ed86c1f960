"""Backfill: 1,000 past goals delivered to a newly installed receiver, on the embedded defaults,
and what it does to live goals meanwhile.

    python benchmarks/bench_backfill.py [--quick] [--json PATH]

A temporary GOALHUB_HOME (embedded Redis and store); 1,000 goals written to the store (not
timed); one real forking worker, the rq-scheduler and the API (waitress) with the test goal
types and ``backfill_plugin`` (a no-op receiver of goal.created). Then:

- baseline: live goals POSTed at 2/s for 10 s with no backfill running; latency from each
  POST to its last receiver outcome (p50/p95);
- backfill: ``goalhub backfill backfill_plugin`` (the real command) over the 1,000 goals,
  timed from start to the last outcome final; the same live load runs meanwhile and its
  latency is measured the same way.

The backfill's jobs go to the backfill queue, which the worker takes after the live queues:
the live figures show how far that keeps the backfill out of live goals' way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import support
from support import Headline

LIVE_RATE = 2.0


def store_goals(db: Any, count: int) -> None:
    from bson import ObjectId

    now = time.time()
    db.goals.insert_many([
        {"_id": ObjectId(), "_cls": "TriggerExclusiveGoal", "active": False, "conditions": {"session_id": "s"},
         "levels": [{"target": 60}], "nbf": now - 3600, "exp": now - 60, "context": {"type": "trigger_exclusive"},
         "metadata": {"user_id": support.STREAMER}, "created_at": now - 3600 + i * 0.1}
        for i in range(count)
    ])


def live_latency(base: str, token: str, session_id: str, seconds: float) -> list[float]:
    """POST a trigger goal every 1/LIVE_RATE s for ``seconds``; ms from each POST to its last outcome."""
    import requests

    from goalhub import dispatch

    headers = {"Authorization": f"Bearer {token}"}
    posted: list[tuple[str, float]] = []
    started = time.monotonic()
    for i in range(int(seconds * LIVE_RATE)):
        time.sleep(max(0.0, i / LIVE_RATE - (time.monotonic() - started)))
        now = time.time()
        body = {"levels": [{"target": 60}], "context": {"session_id": session_id, "exclusive_to": f"v{i}"},
                "nbf": now, "exp": now + 3600}
        answer = requests.post(f"{base}/goals?type=trigger_exclusive", json=body, headers=headers, timeout=10)
        answer.raise_for_status()
        posted.append((answer.json()["goal_id"], now))

    def final(goal_id: str) -> float | None:
        outcomes, complete = dispatch.delivered_outcomes(goal_id, ["goal.created"])
        if outcomes and complete and all(o["status"] in ("ok", "skipped", "failed") for o in outcomes):
            return max(o.get("finished_at") or o.get("at") or 0 for o in outcomes)
        return None

    return [(support.wait_for(lambda g=goal_id: final(g), timeout=300, what=f"goal {goal_id}") - at) * 1000
            for goal_id, at in posted]


def main() -> None:
    args = support.arguments(__doc__)
    count = 200 if args.quick else 1000
    with support.temporary_home() as home:
        import os

        from goalhub.auth import mint_token
        from goalhub.store import get_database

        os.environ["GOALHUB_PLUGINS"] = "api_support,backfill_plugin"
        os.environ["PYTHONPATH"] = os.pathsep.join([str(support.ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
        db = get_database()
        store_goals(db, count)
        session_id = support.new_session(db)
        token = mint_token(support.STREAMER, ["CREATOR"])
        workers = support.start_workers(1, home)
        with support.children(*workers, support.start_scheduler(home)) as running:
            server, base = support.start_api(home)
            running.append(server)
            support.log("baseline: live goals with no backfill")
            baseline = live_latency(base, token, session_id, 10)
            support.log(f"backfill of {count} goals, live goals meanwhile")
            began = time.monotonic()
            command = subprocess.Popen([sys.executable, "-m", "goalhub", "backfill", "backfill_plugin", "--json",
                                        "--timeout", "900"], env=support.child_env(), cwd=support.ROOT,
                                       stdout=subprocess.PIPE, text=True)
            during: list[float] = []
            live = threading.Thread(target=lambda: during.extend(live_latency(base, token, session_id, 10)))
            live.start()
            out, _ = command.communicate(timeout=1200)
            took = time.monotonic() - began
            live.join()
            summary = json.loads(out)
    p = support.percentile
    rows = [
        ["backfill", f"{summary['delivered']} of {summary['total']} goals", f"{took:.1f} s",
         f"{summary['delivered'] / took:.1f} goals/s", f"failed {summary['failed']}"],
        ["live latency, no backfill", f"{len(baseline)} goals at {LIVE_RATE:g}/s",
         f"p50 {p(baseline, 50):.0f} ms", f"p95 {p(baseline, 95):.0f} ms", ""],
        ["live latency, during backfill", f"{len(during)} goals at {LIVE_RATE:g}/s",
         f"p50 {p(during, 50):.0f} ms", f"p95 {p(during, 95):.0f} ms",
         f"p95 x{p(during, 95) / p(baseline, 95):.2f}"],
    ]
    print(support.table(["run", "what", "time", "rate", ""], rows,
                        title=f"Backfill of {count} goals (1 forking worker; {support.machine()})"))
    support.write_headlines(args.json, [
        Headline("backfill", f"{count} past goals to a new receiver", f"{summary['delivered'] / took:.1f} goals/s",
                 f"live p95 {p(baseline, 95):.0f} ms alone", f"live p95 x{p(during, 95) / p(baseline, 95):.2f}"),
    ])


if __name__ == "__main__":
    main()
