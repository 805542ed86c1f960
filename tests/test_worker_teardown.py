"""A worker's teardown lets go of its command channel at once (``goalhub.worker._Listening``).

RQ's teardown unsubscribes, then stops the listener thread. The thread reads the unsubscribe
reply, finds itself unsubscribed and waits up to RQ's ``sleep_time`` (60 s) to be subscribed
again; redis-py 8.2's ``stop()`` joins it without a timeout. Every burst drain, every recycled
pool worker and every stopping worker then hung for a minute."""

from __future__ import annotations

import threading
import time

import pytest

from goalhub.connection import get_redis
from goalhub.pool import PoolWorker
from goalhub.queues import all_queues
from goalhub.worker import RecoveringSimpleWorker, RecoveringWorker, _LocalWorker


def _unsubscribed_within(worker, seconds: float, *, listen: float) -> bool:
    worker.subscribe()
    deadline = time.monotonic() + 5
    while not worker.pubsub.subscribed:  # the listener read the subscribe reply
        assert time.monotonic() < deadline, "the listener never subscribed"
        time.sleep(0.01)
    time.sleep(listen)  # 0: it may still be returning from that read; else blocked on the next
    done = threading.Thread(target=worker.unsubscribe, daemon=True)
    done.start()
    done.join(seconds)
    return not done.is_alive() and not worker.pubsub_thread.is_alive()


def _pubsub_descheduled(make):
    def pubsub(*args, **kwargs):
        made = make(*args, **kwargs)
        made.unsubscribe = _descheduled_after_unsubscribing(made)
        return made
    return pubsub


def _descheduled_after_unsubscribing(pubsub):
    """``pubsub.unsubscribe``, then a pause: on a busy machine the listener reads the reply
    before the teardown goes on to stop it (what hung RQ's own teardown)."""
    unsubscribe = pubsub.unsubscribe

    def slow(*args, **kwargs):
        unsubscribe(*args, **kwargs)
        time.sleep(0.3)
    return slow


@pytest.mark.parametrize("cls", [RecoveringWorker, RecoveringSimpleWorker, PoolWorker, _LocalWorker])
@pytest.mark.parametrize("listen", [0, 0.2])
def test_a_worker_lets_go_of_its_command_channel_at_once(goalhub_env, cls, listen):
    for _ in range(3):
        worker = cls(all_queues(), connection=get_redis())
        worker.connection.pubsub = _pubsub_descheduled(worker.connection.pubsub)
        assert _unsubscribed_within(worker, 5, listen=listen), \
            f"{cls.__name__}: its listener still runs 5 s after teardown"
