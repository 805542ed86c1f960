"""Idempotent creation: the same request id from the same caller gets the first answer.

The key is the ``Idempotency-Key`` header, else the platform's ``x-request-id`` (seed 000
sends one with every request). A record ``<user_id>:<key>`` is inserted in the
``requests`` collection *before* the work, so of two identical requests racing, one does
the work and the other is told it is in progress (409) or, once it is done, gets the
stored answer. A request that is refused or fails deletes its record: nothing is left
behind, and a retry (after a 503, say) can succeed. The same key with a different
request is a 422, not a silent replay of an unrelated answer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import request
from pymongo.errors import DuplicateKeyError

from goalhub import config, retention
from goalhub.errors import BadRequest, Conflict, Unprocessable
from goalhub.store import get_database

KEY_HEADERS = ("Idempotency-Key", "X-Request-Id")
MAX_KEY_LENGTH = 255


@dataclass
class Answer:
    body: dict[str, Any]
    status: int
    headers: dict[str, str] = field(default_factory=dict)


def request_key() -> str | None:
    """The caller's idempotency key, if the request carries one."""
    for header in KEY_HEADERS:
        value = request.headers.get(header)
        if value is None or not value.strip():
            continue
        value = value.strip()
        if len(value) > MAX_KEY_LENGTH or not value.isascii() or not value.isprintable():
            raise BadRequest(f"{header} must be at most {MAX_KEY_LENGTH} printable ASCII characters",
                             code="invalid_request_id", field=header)
        return value
    return None


def fingerprint(*parts: Any) -> str:
    """A digest of what the request asks for, to tell a replay from a reused key."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent(user_id: str, asked: tuple[Any, ...], work: Callable[[], Answer]) -> Answer:
    """Run ``work`` once per (caller, key); replay its answer for the same key. ``asked``: what
    the request asks for (its ``fingerprint`` is taken only when the request carries a key)."""
    key = request_key()
    if key is None:
        return work()
    digest = fingerprint(*asked)
    db = get_database()
    record_id = f"{user_id}:{key}"
    for _ in range(3):
        now = time.time()
        try:
            db.requests.insert_one(
                {"_id": record_id, "user_id": user_id, "key": key, "fingerprint": digest,
                 "state": "pending", "created_at": now, **retention.stamp()}
            )
            break
        except DuplicateKeyError:
            record = db.requests.find_one({"_id": record_id})
        if record is None:
            continue  # its owner failed and deleted it just now: try again
        if record.get("fingerprint") != digest:
            raise Unprocessable("this request id was already used for a different request",
                                code="request_id_reused", field="x-request-id")
        if record["state"] == "done":
            answer = record["answer"]
            return Answer(answer["body"], answer["status"], {**answer["headers"], "Idempotent-Replayed": "true"})
        if now - record["created_at"] < 2 * config.settings().API_TIMEOUT:
            raise Conflict("a request with this id is still in progress", code="request_in_progress")
        # Left pending by a process that died mid-request: the new attempt takes it over.
        db.requests.delete_one({"_id": record_id, "state": "pending", "created_at": record["created_at"]})
    else:
        raise Conflict("a request with this id is still in progress", code="request_in_progress")

    try:
        answer = work()
    except BaseException:
        db.requests.delete_one({"_id": record_id, "state": "pending"})
        raise
    db.requests.update_one(
        {"_id": record_id},
        {"$set": {"state": "done", "finished_at": time.time(),
                  "answer": {"body": answer.body, "status": answer.status, "headers": answer.headers}}},
    )
    return answer
