"""What a failed receiver leaves in its outcome record (issue 12 makes it safe to show)."""

from __future__ import annotations

import traceback


def failure_fields(exc: BaseException) -> dict:
    """The fields ``$set`` on an outcome when its receiver failed with ``exc`` (call it inside
    the ``except`` block). The one place that turns an exception into stored text."""
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}


def redact(text: str) -> str:
    """``text`` with operator secrets removed."""
    return text
