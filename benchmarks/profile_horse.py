"""Profile goalhub's work-horse: where one ``create_goal`` job (an exclusive goal, every real
plugin installed) spends its time inside a forked RQ work-horse, with pyinstrument.

    python benchmarks/profile_horse.py [--jobs N] [--noop]

A temporary GOALHUB_HOME with its own embedded Redis and store. The worker is goalhub's own
(``RecoveringWorker``, prepared as ``run_worker`` prepares it, before any fork); each horse runs
its job under pyinstrument from the fork to ``os._exit``. Prints the profile of the median job
and the per-job wall times. ``--noop`` profiles ``goalhub.worker.noop`` jobs instead (the floor).
Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import support


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--noop", action="store_true")
    options = parser.parse_args()
    from pyinstrument import Profiler

    with support.temporary_home(load_plugins=support.REAL_PLUGINS) as home:
        from goalhub import tasks, worker
        from goalhub.connection import get_redis
        from goalhub.queues import all_queues, get_queue
        from goalhub.store import get_database

        db = get_database()
        out = Path(home) / "profiles"
        out.mkdir()
        for _ in range(options.jobs):
            if options.noop:
                get_queue().enqueue(worker.noop)
                continue
            session = support.new_session(db)
            trigger = support.ended_trigger_exclusive(db, session)
            tasks.enqueue_create_goal(exclusive(session, trigger))

        class ProfiledWorker(worker.RecoveringWorker):
            def main_work_horse(self, job, queue):  # the horse, right after the fork
                profiler = Profiler(interval=0.0005)
                began = time.perf_counter()
                profiler.start()
                real_exit = os._exit

                def exit_after_profile(code: int) -> None:
                    profiler.stop()
                    elapsed = (time.perf_counter() - began) * 1000
                    (out / f"{elapsed:09.2f}-{job.id}.txt").write_text(profiler.output_text(unicode=False,
                                                                                            show_all=bool(os.environ.get("PROFILE_ALL"))))
                    real_exit(code)

                os._exit = exit_after_profile
                super().main_work_horse(job, queue)

        worker.prepare_worker()
        began = time.perf_counter()
        ProfiledWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="WARNING",
                                                                  with_scheduler=False)
        wall = time.perf_counter() - began
        files = sorted(out.iterdir())
        times = [float(f.name.split("-", 1)[0]) for f in files]
        print(f"{len(files)} jobs in {wall:.2f} s ({len(files) / wall:.1f} jobs/s); horse ms per job: "
              f"median {statistics.median(times):.1f}, min {min(times):.1f}, max {max(times):.1f}")
        print(files[len(files) // 2].read_text())


def exclusive(session: str, trigger: str) -> dict:
    from bson import ObjectId

    return {"_id": str(ObjectId()), "_cls": "ExclusiveGoal", "active": True,
            "conditions": {"session_id": session, "exclusive_to": trigger}, "levels": [{"target": 300}],
            "nbf": round(time.time(), 3), "exp": None,
            "context": {"type": "exclusive", "exclusive_to": trigger, "session_id": session,
                        "trigger_exclusive_goal_id": trigger},
            "metadata": {"user_id": support.STREAMER}}


if __name__ == "__main__":
    sys.exit(main())
