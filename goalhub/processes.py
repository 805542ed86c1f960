"""Whether a process of this machine is gone: one answer for the metrics' compaction (the
sample files of processes that ended) and for liveness (workers and schedulers that stopped)."""

from __future__ import annotations

import psutil


def gone(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs no more (a zombie counts as gone); False
    when that cannot be told (``psutil`` may not inspect it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
