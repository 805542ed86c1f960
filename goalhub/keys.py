"""Public keys that verify bearer tokens, so that the platform signs and goalhub only verifies
(issue 24): RS256, ES256/ES384 and EdDSA (Ed25519), from PEM files or a JWKS file.

- ``GOALHUB_JWT_PUBLIC_KEYS``: ``kid=/path/to/key.pem,kid2=/path/to/other.pem``; each file holds
  one public key (``-----BEGIN PUBLIC KEY-----``); its algorithm follows from its type: RSA is
  RS256, an EC key on P-256 is ES256 (P-384: ES384), Ed25519 is EdDSA.
- ``GOALHUB_JWT_JWKS_FILE``: a JWKS document (``{"keys": [{"kid": ..., "kty": ..., ...}]}``),
  as the platform publishes it; every key needs a ``kid``; ``alg``, when given, must agree with
  the key's type. Private members (``d``...) are refused: goalhub must not hold signing keys.

A token's ``kid`` picks exactly one key, and that key's algorithm is the only one accepted for
it (the token's ``alg`` header must agree): no algorithm confusion between an HMAC secret and a
public key. Files are read again when they change (size or modification time), so a rotation
(see README, "Rotating keys") needs no restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goalhub import config

#: The algorithms goalhub verifies with public keys.
ASYMMETRIC = ("RS256", "ES256", "ES384", "EdDSA")


@dataclass(frozen=True, eq=False)  # hashed by identity: a verdict cache keys on the loaded keys
class VerifyKey:
    kid: str
    algorithm: str
    key: Any  # an HMAC secret (str) or a cryptography public key


def configured() -> bool:
    """Whether public keys are configured (then no development key is ever generated)."""
    return bool(config.settings().JWT_PUBLIC_KEYS or config.settings().JWT_JWKS_FILE)


def public_keys() -> tuple[VerifyKey, ...]:
    """The configured public keys, in order; ``ValueError`` naming the file and the problem."""
    sources: list[tuple[str, Path]] = []
    for part in (config.settings().JWT_PUBLIC_KEYS or "").split(","):
        if part.strip():
            kid, sep, path = part.partition("=")
            if not sep or not kid.strip() or not path.strip():
                raise ValueError("GOALHUB_JWT_PUBLIC_KEYS must be kid=/path/to/key.pem,kid2=/path/...")
            sources.append((kid.strip(), Path(path.strip())))
    jwks = config.settings().JWT_JWKS_FILE
    stamp = tuple((kid, str(path), _stamp(path)) for kid, path in sources)
    jwks_stamp = (str(jwks), _stamp(Path(jwks))) if jwks else None
    key = (stamp, jwks_stamp)
    found = _cache.get(key)
    if found is None:
        loaded = [_from_pem(kid, path) for kid, path in sources]
        if jwks:
            loaded += _from_jwks(Path(jwks))
        kids = [k.kid for k in loaded]
        duplicate = next((kid for kid in kids if kids.count(kid) > 1), None)
        if duplicate:
            raise ValueError(f"the public key kid {duplicate!r} is configured twice")
        found = tuple(loaded)
        _cache.clear()  # only the current configuration is kept
        _cache[key] = found
    return found


_cache: dict[Any, tuple[VerifyKey, ...]] = {}


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ValueError(f"cannot read the public key file {path}: {exc.strerror}") from None
    return stat.st_mtime_ns, stat.st_size


def algorithm_of(key: Any) -> str:
    """RS256, ES256, ES384 or EdDSA, from a public key's type."""
    # deferred: cryptography is heavy, and needed only with public keys
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too short (2048 at least)")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "ES256", "secp384r1": "ES384"}
        if key.curve.name not in curves:
            raise ValueError(f"EC curve {key.curve.name} is not supported (P-256 or P-384)")
        return curves[key.curve.name]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"a {type(key).__name__} is not a supported public key (RSA, EC P-256/P-384, Ed25519)")


def _from_pem(kid: str, path: Path) -> VerifyKey:
    # deferred: cryptography is heavy, and needed only with PEM keys
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path} holds a private key: give goalhub the public key only")
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"{path} is not a PEM public key: {exc}") from None
    return VerifyKey(kid, algorithm_of(key), key)


def _from_jwks(path: Path) -> list[VerifyKey]:
    import jwt  # deferred: PyJWT's JWKS parsing, only with a JWKS file

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {getattr(exc, 'msg', exc)}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path} is not a JWKS document with keys")
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or not entry["kid"]:
            raise ValueError(f"{path}: every key needs a kid")
        if any(member in entry for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ValueError(f"{path}: key {entry['kid']!r} holds private or secret material")
        try:
            key = jwt.PyJWK(entry).key
        except jwt.PyJWTError as exc:
            raise ValueError(f"{path}: key {entry['kid']!r}: {exc}") from None
        algorithm = algorithm_of(key)
        if entry.get("alg") not in (None, algorithm):
            raise ValueError(f"{path}: key {entry['kid']!r} says alg {entry['alg']} but is a {algorithm} key")
        found.append(VerifyKey(entry["kid"], algorithm, key))
    return found

