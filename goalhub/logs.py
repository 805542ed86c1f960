"""Request-scoped log context (issue 13). Interface only for now."""

from __future__ import annotations


def current_request_id() -> str | None:
    """The request id of the work in hand (the HTTP request, or the job's ``meta``), if any.
    Dispatch stores it on every outcome record as ``request_id``."""
    return None
