"""The long-running processes: RQ workers and the rq-scheduler.

Both load the plugins before they start, so a forking worker's work-horses inherit them.
"""

from __future__ import annotations

import logging

from rq import SimpleWorker, Worker

from goalhub import config
from goalhub.connection import get_redis
from goalhub.plugins import get_plugin_manager
from goalhub.queues import all_queues, get_scheduler


def run_worker(*, burst: bool = False, simple: bool = False, name: str | None = None, logging_level: str = "INFO") -> bool:
    """Work on goalhub's queues (lifecycle first). ``simple`` runs jobs in-process, without forking.

    RQ's own scheduler runs inside the worker for receivers' retry backoff; goal
    activation at ``nbf`` goes through rq-scheduler (``run_scheduler``).
    """
    import goalhub.dispatch  # noqa: F401  (connects the core to its signals before forking)

    get_plugin_manager()
    worker_class = SimpleWorker if simple else Worker
    worker = worker_class(all_queues(), connection=get_redis(), name=name)
    return worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)


def run_scheduler(*, interval: float | None = None, burst: bool = False) -> None:
    """Run rq-scheduler: moves due ``activate_goal``/``end_goal`` jobs to the lifecycle queue."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(message)s")
    get_scheduler(interval if interval is not None else config.scheduler_interval()).run(burst=burst)
