"""Bearer tokens: the one place that verifies and mints them.

Tokens are the platform's JWTs (seed 000): a ``kid`` header naming one key of the configured
key set, signed with that key's algorithm (HS256 for a shared secret of ``GOALHUB_JWT_KEYS``;
RS256, ES256/ES384 or EdDSA for a public key of ``goalhub.keys``, which goalhub can only
verify with), claims ``sub`` (the caller's 24-hex user id), ``jti``, ``iss``, ``aud``,
``iat``, ``exp``, ``version``, ``scopes`` and ``metadata``. Keys come from
``GOALHUB_JWT_KEYS`` and the public keys; with none of them a development key is generated
once under ``GOALHUB_HOME`` (never in production mode, ``GOALHUB_ENV=production``). Every refusal is an ``Unauthorized`` (401) with a stable ``code``:

``token_missing``, ``token_malformed``, ``token_algorithm``, ``token_kid_missing``,
``token_kid_unknown``, ``token_signature``, ``token_expired``, ``token_not_yet_valid``,
``token_audience``, ``token_issuer``, ``token_claims``.

A missing scope is a ``Forbidden`` (403) with code ``scope_missing``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from goalhub import config, keys
from goalhub.config import ConfigError
from goalhub.errors import Forbidden, Unauthorized

__all__ = [
    "ADMIN",
    "ALGORITHM",
    "CREATOR",
    "PLATFORM",
    "Principal",
    "bearer_principal",
    "mint_token",
    "require_scope",
    "signing_keys",
    "verify_token",
]

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
# The scopes goalhub checks (a token carries them in ``scopes``).
CREATOR = "CREATOR"
ADMIN = "ADMIN"
# The platform's own service scope: only it asserts which RTC rooms a session streams from.
PLATFORM = "PLATFORM"
DEV_KEYS_FILE = "jwt_keys.json"

# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
_MIN_SECRET_BYTES = 32
# Far above any real token (the seed's is ~500 bytes); refuses oversized input before any
# base64 or JSON work is spent on it.
_MAX_TOKEN_LENGTH = 8192
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
_TIME_CLAIMS = ("exp", "nbf", "iat")


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    user_id: str
    scopes: frozenset[str] = frozenset()
    token_id: str | None = None
    # Left out of eq/hash (a dict is unhashable) and of repr (claims don't belong in logs).
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def has_scope(self, name: str) -> bool:
        return name in self.scopes


# --- keys -----------------------------------------------------------------------------


def signing_keys() -> dict[str, str]:
    """The key set ``{kid: secret}``, in configured order (the first kid signs).

    Read on every call, like all configuration. Raises ``ValueError`` on a bad
    configuration: that is the operator's to fix, not the caller's, so it is not a
    ``GoalhubError`` and its message never reaches a client.
    """
    raw = config.settings().JWT_KEYS
    if raw is None:
        if keys.configured():
            return {}  # public keys only: the platform signs, goalhub only verifies
        if config.settings().ENV == "production":
            raise ConfigError("GOALHUB_ENV=production needs keys: GOALHUB_JWT_PUBLIC_KEYS, GOALHUB_JWT_JWKS_FILE "
                              "or GOALHUB_JWT_KEYS (no development key is generated in production)")
        return _dev_keys()
    return _configured_keys(raw)


def verification_keys() -> tuple[keys.VerifyKey, ...]:
    """Every key a token may name: the shared secrets (HS256), then the public keys."""
    return _shared(tuple(signing_keys().items())) + (keys.public_keys() if keys.configured() else ())


@functools.lru_cache(maxsize=8)
def _shared(secrets_: tuple[tuple[str, str], ...]) -> tuple[keys.VerifyKey, ...]:
    # The same objects for the same secrets: a kept verdict (``_verified``) is keyed on them.
    return tuple(keys.VerifyKey(kid, ALGORITHM, secret) for kid, secret in secrets_)


def check_keys() -> None:
    """At the start of a process that verifies tokens: the keys load (a bad file is one line,
    before any request), and in production mode some are configured."""
    try:
        if not verification_keys():
            raise ConfigError("no keys verify bearer tokens")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@functools.lru_cache(maxsize=8)
def _configured_keys(raw: str) -> dict[str, str]:
    # Parsed once per value (every request verifies a token), still read on every call.
    return _parse_keys(raw, source="GOALHUB_JWT_KEYS")


def _parse_keys(raw: str, *, source: str) -> dict[str, str]:
    text = raw.strip()
    pairs: list[tuple[Any, Any]] = []
    if text.startswith("{"):
        try:
            # Pairs, not a dict: a kid listed twice is an error, not "last one wins".
            pairs = json.loads(text, object_pairs_hook=list)
        except ValueError as exc:
            # exc.msg only: the document itself holds secrets.
            raise ValueError(f"{source} is not a valid JSON object: {getattr(exc, 'msg', 'invalid')}") from None
    else:
        for part in text.split(","):
            if not part.strip():
                continue
            kid, sep, secret = part.partition(":")
            if not sep:
                raise ValueError(f"{source} must be a JSON object or 'kid:secret,kid2:secret2'")
            pairs.append((kid.strip(), secret.strip()))

    keys: dict[str, str] = {}
    for kid, secret in pairs:
        if not isinstance(kid, str) or not kid or not isinstance(secret, str):
            raise ValueError(f"{source}: every key needs a non-empty kid and a string secret")
        if kid in keys:
            raise ValueError(f"{source}: kid {kid!r} is listed twice")
        if len(secret.encode()) < _MIN_SECRET_BYTES:
            raise ValueError(f"{source}: the secret of kid {kid!r} is shorter than {_MIN_SECRET_BYTES} bytes")
        if _looks_asymmetric(secret):
            # A public key used as an HMAC secret is the HS/RS confusion attack's favourite key.
            raise ValueError(f"{source}: the secret of kid {kid!r} looks like a public/private key")
        keys[kid] = secret
    if not keys:
        raise ValueError(f"{source} holds no keys")
    return keys


def _looks_asymmetric(secret: str) -> bool:
    return "-----BEGIN" in secret or secret.startswith(("ssh-", "ecdsa-sha2-"))


# path -> (the file's mtime and size, its keys): the file is read again only when it changes.
_dev_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}


def _dev_keys() -> dict[str, str]:
    path = config.home() / DEV_KEYS_FILE
    try:
        stat = path.stat()
    except FileNotFoundError:
        _create_dev_keys(path)
        stat = path.stat()
    cached = _dev_cache.get(str(path))
    if cached and cached[0] == (stat.st_mtime_ns, stat.st_size):
        return cached[1]
    if os.name == "posix" and stat.st_mode & 0o077:
        log.warning("%s is readable by other users; it should be mode 0600", path)
    keys = _parse_keys(path.read_text(encoding="utf-8"), source=str(path))
    _dev_cache[str(path)] = ((stat.st_mtime_ns, stat.st_size), keys)
    return keys


def _create_dev_keys(path: Path) -> None:
    keys = {secrets.token_hex(4): secrets.token_urlsafe(48)}
    # Write the whole file under a private name, then hard-link it into place: link()
    # fails when the name exists, so of processes starting at once exactly one key wins,
    # and no reader ever sees a half-written file. 0600 from birth, never chmod'ed later.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(keys, fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process won the race; its key is the key
        log.warning("generated a development JWT key in %s; set GOALHUB_JWT_KEYS in production", path)
    finally:
        tmp.unlink(missing_ok=True)


# --- verifying ------------------------------------------------------------------------


def verify_token(token: str) -> Principal:
    """The ``Principal`` of a valid bearer token; ``Unauthorized`` for anything else.

    A client sends the same token with every request while it lasts, so a verdict is kept
    (per process, the last ``VERIFIED_TOKENS`` tokens that passed): keyed by the token and
    everything else it depends on (the key set, audience, issuer, leeway), so a rotated key
    or a new audience verifies again. Only time changes a kept verdict: a token valid once
    stays past its ``nbf`` and ``iat``, and its ``exp`` is checked on every use."""
    if not isinstance(token, str) or not token.strip():
        raise Unauthorized("a bearer token is required", code="token_missing")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise Unauthorized("the bearer token is too long", code="token_malformed")
    leeway = config.settings().JWT_LEEWAY
    principal = _verified(token, verification_keys(), config.settings().JWT_AUDIENCE, config.settings().JWT_ISSUER, leeway)
    # PyJWT's own test (api_jwt._validate_exp), as at the first verification.
    if principal.claims["exp"] <= time.time() - leeway:
        raise Unauthorized("the bearer token has expired", code="token_expired")
    return principal


VERIFIED_TOKENS = 1024


@functools.lru_cache(maxsize=VERIFIED_TOKENS)  # keeps what returns; a refusal raises, is never kept
def _verified(token: str, keyring: tuple[keys.VerifyKey, ...], audience: str, issuer: str,
              leeway: int) -> Principal:
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, RecursionError):
        raise Unauthorized("the bearer token is not a well-formed JWT", code="token_malformed") from None

    # Decided from our configuration, never from the token: the header only has to agree.
    algorithms = {key.algorithm for key in keyring}
    if header.get("alg") not in algorithms:
        raise Unauthorized(f"the bearer token must be signed with {' or '.join(sorted(algorithms))}",
                           code="token_algorithm")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthorized("the bearer token has no key id (kid)", code="token_kid_missing")
    # Exactly the named key: trying every key would let one leaked key sign as any kid.
    named = next((key for key in keyring if key.kid == kid), None)
    if named is None:
        raise Unauthorized("the bearer token's key id (kid) is not known", code="token_kid_unknown")
    if header.get("alg") != named.algorithm:  # the kid's own algorithm, none other
        raise Unauthorized(f"the bearer token's key {kid!r} signs with {named.algorithm}", code="token_algorithm")

    _check_signature_and_shape(token, named.key, named.algorithm)
    claims = _check_claims(token, named.key, named.algorithm, audience, issuer, leeway)

    sub = claims["sub"]
    if not isinstance(sub, str) or not _OBJECT_ID.fullmatch(sub):
        raise Unauthorized("the bearer token's sub must be a 24-hex user id", code="token_claims")
    scopes = claims.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        raise Unauthorized("the bearer token's scopes must be a list of names", code="token_claims")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise Unauthorized("the bearer token's jti must be a string", code="token_claims")

    # Lower-cased like every other id in goalhub (validation.object_id), so ownership
    # checks compare equal strings.
    return Principal(user_id=sub.lower(), scopes=frozenset(scopes), token_id=jti, claims=claims)


def _check_signature_and_shape(token: str, secret: Any, algorithm: str) -> None:
    """Signature first, then the payload's shape, before any claim is trusted or judged."""
    try:
        payload = jwt.PyJWS().decode(token, secret, algorithms=[algorithm])
    except jwt.InvalidSignatureError:
        raise Unauthorized("the bearer token's signature is not valid", code="token_signature") from None
    except (jwt.PyJWTError, ValueError, RecursionError):
        raise Unauthorized("the bearer token is not a well-formed JWT", code="token_malformed") from None
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        claims = None
    if not isinstance(claims, dict):
        raise Unauthorized("the bearer token's payload is not a JSON object", code="token_malformed")
    # PyJWT turns these into int(): Infinity or 1e400 would crash it (OverflowError) and a
    # string would be coerced; only finite numbers are times.
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            raise Unauthorized(f"the bearer token's {name} must be a number", code="token_claims")


def _check_claims(token: str, secret: Any, algorithm: str, audience: str, issuer: str,
                  leeway: int) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the bearer token has expired", code="token_expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("the bearer token is not valid yet", code="token_not_yet_valid") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("the bearer token is for another audience", code="token_audience") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("the bearer token is from another issuer", code="token_issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        code = {"aud": "token_audience", "iss": "token_issuer"}.get(exc.claim, "token_claims")
        raise Unauthorized(f"the bearer token has no {exc.claim} claim", code=code) from None
    except jwt.PyJWTError:
        raise Unauthorized("the bearer token's claims are not valid", code="token_claims") from None


def bearer_principal(authorization_header: str | None) -> Principal:
    """The ``Principal`` of an ``Authorization: Bearer <token>`` header value."""
    if authorization_header is None or not authorization_header.strip():
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required", code="token_missing")
    parts = authorization_header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", code="token_malformed")
    return verify_token(parts[1])


def require_scope(principal: Principal, scope: str) -> None:
    """``Forbidden`` (403, ``scope_missing``) unless the caller's token grants ``scope``."""
    if not principal.has_scope(scope):
        raise Forbidden(f"this needs the {scope} scope", code="scope_missing")


# --- minting --------------------------------------------------------------------------


def mint_token(
    sub: str,
    scopes: Iterable[str] = ("CREATOR",),
    ttl: int = 3600,
    kid: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A token shaped exactly like the platform's (seed 000), signed with a configured key.

    ``kid`` picks the key (default: the first). ``extra`` claims are applied last and may
    override any standard one, which is what tests of refusals need.
    """
    if not isinstance(sub, str) or not _OBJECT_ID.fullmatch(sub):
        raise ValueError("sub must be a 24-hex user id")
    if isinstance(scopes, str):
        # list("CREATOR") would silently grant scopes C, R, E, A, T, O.
        raise TypeError("scopes must be an iterable of scope names, not one string")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    shared = signing_keys()
    if not shared:
        raise ValueError("goalhub holds no signing key: with public keys only, the platform signs tokens")
    kid = next(iter(shared)) if kid is None else kid
    if kid not in shared:
        raise ValueError(f"kid {kid!r} is not in the key set")

    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "jti": secrets.token_urlsafe(12),  # 16 url-safe characters, like the seed's
        "iss": config.settings().JWT_ISSUER,
        "aud": config.settings().JWT_AUDIENCE,
        "iat": now,
        "exp": now + ttl,
        "version": 2,
        "scopes": list(scopes),
        "metadata": {
            "fingerprint": secrets.token_hex(4),
            "flavor": "swag.live",
            "original": {"iat": now, "method": "password"},
        },
    }
    claims.update(extra or {})
    # sort_headers=False keeps the seed's header order: typ, alg, kid.
    return jwt.encode(claims, shared[kid], algorithm=ALGORITHM, headers={"kid": kid}, sort_headers=False)
