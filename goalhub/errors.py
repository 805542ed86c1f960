"""The one error model of goalhub.

Every failure a caller can act on is one of these classes. The HTTP API turns any of
them into ``{"error": {"code", "message", "field"?}}`` with the class's status; the CLI
prints the message on one line and exits non-zero. ``code`` is stable and machine
readable; ``message`` is for people; ``field`` names the offending input, when there is one.
"""

from __future__ import annotations

import errno


class GoalhubError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def to_dict(self) -> dict:
        error: dict = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class BadRequest(GoalhubError):
    status = 400
    code = "bad_request"


class Unauthorized(GoalhubError):
    status = 401
    code = "unauthorized"


class Forbidden(GoalhubError):
    status = 403
    code = "forbidden"


class NotFound(GoalhubError):
    status = 404
    code = "not_found"


class Conflict(GoalhubError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GoalhubError):
    status = 413
    code = "payload_too_large"


class Unprocessable(GoalhubError):
    status = 422
    code = "rule_broken"


class BackendUnavailable(GoalhubError):
    status = 503
    code = "backend_unavailable"


class StorageFull(BackendUnavailable):
    """A disk goalhub writes to is full: the store's, or Redis's (which then refuses writes)."""

    code = "storage_full"
    retry_after = 30


# MongoDB's OutOfDiskSpace; SQLite's SQLITE_FULL ("database or disk is full").
_MONGO_OUT_OF_DISK = 14031
_SQLITE_FULL = 13
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a disk is full: an ``OSError`` ENOSPC/EDQUOT,
    SQLite's SQLITE_FULL, MongoDB's OutOfDiskSpace, or Redis refusing writes because it cannot
    persist them (``MISCONF``: its last background save failed, as on a full disk). Told apart
    by attributes and messages, so this module imports none of those libraries."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        if getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(current):
            return True
        if getattr(current, "code", None) == _MONGO_OUT_OF_DISK and type(current).__module__.startswith("pymongo"):
            return True
        if type(current).__module__.startswith("redis") and str(current).startswith("MISCONF"):
            return True
        current = current.__cause__ or current.__context__
    return False
