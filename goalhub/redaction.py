"""What a failed receiver leaves in its outcome record, and what of it a client may see.

A receiver's exception text is the operator's: it names sink URLs (with their user,
password and ``?token=``), hosts and the answers of outside services. So a failure is
stored as:

- ``error_class``: the exception's class name (``HTTPError``), shown to the goal's creator;
- ``error_code``: a stable code for it (``http_error``, ``timeout``, ...), shown too;
- ``error`` (``Class: message``) and ``traceback``: the text, with secrets redacted, for
  operators only (``goalhub outcomes``, the dashboard), never in ``GET /goals/<id>``.

``redact`` is applied to every operator-facing copy as well: a log or a dashboard is read
by more people than hold the keys.
"""

from __future__ import annotations

import re
import traceback

REDACTED = "***"

# user:password@ in any URL (scheme://user:password@host).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
# Secret-looking query or form parameters: ?token=, &key=, api_key=, secret=, password=, signature= ...
_SECRET_PARAM = re.compile(
    r"(?P<name>(?:[A-Za-z0-9_-]*?)(?:token|key|secret|password|passwd|pwd|signature|sig|auth|credential)"
    r"[A-Za-z0-9_-]*)=(?P<value>[^&\s#'\"]+)",
    re.IGNORECASE,
)
# Authorization header values (Bearer, Basic, HMAC-SHA256 Credential=...), as headers or repr'd dicts.
_AUTHORIZATION = re.compile(
    r"(?P<name>(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?P<value>[^'\"\r\n,}]+)", re.IGNORECASE
)
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)

# Exception classes a client may act on, by the code they get (first match in the MRO wins).
_CODES = {
    "TimeoutError": "timeout",
    "JobTimeoutException": "timeout",
    "Timeout": "timeout",
    "ConnectionError": "connection_error",
    "HTTPError": "http_error",
    "LookupError": "not_found",
    "KeyError": "missing_data",
    "ValueError": "invalid_data",
    "PermissionError": "forbidden",
}


def redact(text: str) -> str:
    """``text`` with operator secrets removed: URL credentials, secret query parameters and
    Authorization values become ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m['name']}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {REDACTED}", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m['name']}={REDACTED}", text)
    return text


def error_code(exc: BaseException | type[BaseException]) -> str:
    """A stable, client-safe code for an exception class."""
    cls = exc if isinstance(exc, type) else type(exc)
    for klass in cls.__mro__:
        if klass.__name__ in _CODES:
            return _CODES[klass.__name__]
    return "receiver_error"


def failure_fields(exc: BaseException) -> dict:
    """The fields ``$set`` on an outcome when its receiver failed with ``exc`` (call it inside
    the ``except`` block). The one place that turns an exception into stored text."""
    return {
        "error": redact(f"{type(exc).__name__}: {exc}"),
        "error_class": type(exc).__name__,
        "error_code": error_code(exc),
        "traceback": redact(traceback.format_exc(limit=8)),
    }
