"""Per-receiver circuit breaker (issue 14). Interface only for now: nothing ever trips.

``goalhub.dispatch`` calls these around every receiver run, inline or as a job.
"""

from __future__ import annotations


def is_paused(receiver_id: str) -> bool:
    """Whether ``plugin.receiver`` is tripped: dispatch then records the outcome ``paused``,
    does not run it and schedules no retry."""
    return False


def record_ok(receiver_id: str) -> None:
    """A run of the receiver returned normally."""


def record_failure(receiver_id: str, event_id: str, error: str) -> None:
    """A run of the receiver raised or ran over its budget (every failed attempt)."""
