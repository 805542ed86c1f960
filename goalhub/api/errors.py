"""Every error the API answers, in goalhub's one error model.

``GoalhubError`` keeps its status, code and field; werkzeug's own errors (404 unknown
route, 405, 413 ...) get the same JSON shape; a backend that is down is a 503, and so is a full
disk (``storage_full``, with ``Retry-After``); anything
else is a JSON 500 whose details go to the log, never to the client.
"""

from __future__ import annotations

import logging

import redis.exceptions
from flask import Flask, Response, jsonify
from pymongo.errors import ConnectionFailure
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from goalhub.errors import (
    BackendUnavailable,
    GoalhubError,
    PayloadTooLarge,
    StorageFull,
    Unauthorized,
    out_of_space,
)

log = logging.getLogger(__name__)

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

# werkzeug's status -> our stable code.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "rule_broken",
    429: "too_many_requests",
}


def error_response(error: GoalhubError) -> Response:
    response = jsonify(error.to_dict())
    response.status_code = error.status
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    if isinstance(error, Unauthorized):
        # RFC 6750 §3: no error attribute when the request carried no credentials.
        challenge = 'Bearer realm="goalhub"'
        if error.code != "token_missing":
            challenge += f', error="invalid_token", error_description="{error.code}"'
        response.headers["WWW-Authenticate"] = challenge
    return response


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        return error_response(PayloadTooLarge("the request body is too large"))
    status = exc.code or 500
    if status == 500:  # Flask's wrapper of an error outside the view (an after-request hook): it logged it
        return error_response(GoalhubError("internal error", code="internal"))
    error = GoalhubError(exc.description or exc.name, code=_HTTP_CODES.get(status, "http_error"))
    error.status = status
    response = error_response(error)
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response


def _redis_down(exc: Exception) -> Response:
    log.warning("Redis is unreachable: %s", exc)
    return error_response(BackendUnavailable("the job queue is unreachable; retry later", code="queue_unavailable"))


def _store_down(exc: Exception) -> Response:
    log.warning("the store is unreachable: %s", exc)
    return error_response(BackendUnavailable("the store is unreachable; retry later", code="store_unavailable"))


def _unexpected(exc: Exception) -> Response:
    if out_of_space(exc):  # not a bug: the operator frees space, the client retries
        log.error("a disk is full: %s: %s", type(exc).__name__, exc)
        return error_response(StorageFull("storage is full; retry later", code="storage_full"))
    log.exception("unhandled error in the API")
    return error_response(GoalhubError("internal error", code="internal"))


def register(app: Flask) -> None:
    app.register_error_handler(GoalhubError, error_response)
    app.register_error_handler(HTTPException, _http_error)
    for exc_class in REDIS_DOWN:
        app.register_error_handler(exc_class, _redis_down)
    app.register_error_handler(ConnectionFailure, _store_down)
    app.register_error_handler(Exception, _unexpected)
