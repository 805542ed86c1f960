"""The one error model of goalhub.

Every failure a caller can act on is one of these classes. The HTTP API turns any of
them into ``{"error": {"code", "message", "field"?}}`` with the class's status; the CLI
prints the message on one line and exits non-zero. ``code`` is stable and machine
readable; ``message`` is for people; ``field`` names the offending input, when there is one.
"""

from __future__ import annotations


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
