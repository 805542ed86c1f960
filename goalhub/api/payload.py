"""Request bodies in, documents out.

Bodies are parsed strictly: ``application/json`` only, one JSON object, no duplicate
keys (``{"a": 1, "a": 2}`` would otherwise mean whatever the last one says), no
``NaN``/``Infinity`` (not JSON, and poison for every comparison). Documents go out with
ObjectIds as strings.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bson import ObjectId
from flask import current_app, request
from flask.json.provider import DefaultJSONProvider

from goalhub.errors import BadRequest, GoalhubError, PayloadTooLarge

# Deeper than any goal body; refuses pathological nesting before it costs anything.
MAX_DEPTH = 16


class UnsupportedMediaType(GoalhubError):
    status = 415
    code = "unsupported_media_type"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"the key {key!r} appears twice in one object", code="duplicate_key", field=key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON number", code="malformed_json")


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from ``raw``, or a 400 naming what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8", code="malformed_json") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "the body is not valid JSON"
        raise BadRequest(f"the body is not valid JSON: {message}", code="malformed_json") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", code="not_an_object")
    if _depth(value) > MAX_DEPTH:
        raise BadRequest(f"the body is nested deeper than {MAX_DEPTH} levels", code="too_deep")
    return value


def body_bytes() -> bytes:
    """The raw request body, at most MAX_CONTENT_LENGTH bytes: a longer one is a 413, whether it
    says its length (werkzeug checks ``Content-Length``) or is sent chunked (werkzeug would stop
    reading at the limit and hand over a silently truncated body)."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is None or request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=True)
    cached = getattr(request, "_goalhub_body", None)
    if cached is not None:
        return cached
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge("the request body is too large")
    request._goalhub_body = body = b"".join(chunks)  # type: ignore[attr-defined]
    return body


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object. ``optional``: an empty body is ``{}``."""
    raw = body_bytes()
    if optional and not raw.strip():
        return {}
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("the body must be sent as 'content-type: application/json'", code="unsupported_media_type")
    return parse_object(raw)


def plain(value: Any) -> Any:
    """A stored document as JSON-ready data: ObjectIds as strings."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON with ObjectIds as strings and keys in the order they were written."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, ObjectId):
            return str(o)
        return DefaultJSONProvider.default(o)
