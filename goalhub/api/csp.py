"""The Content-Security-Policy and framing headers of goalhub's HTML pages (``/docs``, the
dashboard under ``/rq``): scripts only from this server, plus the page's own inline script
by a per-response nonce; no inline event handlers, nothing from elsewhere, no framing."""

from __future__ import annotations

import base64
import re
import secrets

from flask import Response

_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)(?=[\s>])")


def policy(nonce: str, *, unsafe_eval: bool = False) -> str:
    # 'unsafe-eval' only for a page whose templates compile with new Function() (rq-dashboard).
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' 'nonce-{nonce}'" + (" 'unsafe-eval'" if unsafe_eval else ""),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def harden(response: Response, *, unsafe_eval: bool = False) -> Response:
    """``response`` with nosniff, no framing, a same-origin referrer and, for HTML, a nonce on
    each inline script and the policy that admits only those."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.direct_passthrough:
        response.headers.setdefault("Content-Security-Policy", policy("none", unsafe_eval=unsafe_eval))
        return response
    nonce = base64.b64encode(secrets.token_bytes(16)).decode()
    if response.mimetype == "text/html":
        response.set_data(_INLINE_SCRIPT.sub(f'<script nonce="{nonce}"'.encode(), response.get_data()))
    response.headers["Content-Security-Policy"] = policy(nonce, unsafe_eval=unsafe_eval)
    return response
