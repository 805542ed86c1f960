"""Issue 24 item 7: public keys (the platform signs, goalhub only verifies), ``*_FILE`` secrets,
production mode without keys, and ``/metrics`` with a credential of its own."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import api_support
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from goalhub import auth, config
from goalhub.api import create_app
from goalhub.errors import Unauthorized

STREAMER = "6800a9073e0c346531958b03"


def claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": STREAMER, "iss": config.settings().JWT_ISSUER, "aud": config.settings().JWT_AUDIENCE, "iat": now,
            "exp": now + 600, "scopes": ["CREATOR"], **extra}


def pem(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(private, algorithm: str, kid: str, **extra) -> str:
    return jwt.encode(claims(**extra), private, algorithm=algorithm, headers={"kid": kid})


def jwk(private, kid: str) -> dict:
    algorithm = {rsa.RSAPrivateKey: jwt.algorithms.RSAAlgorithm, ec.EllipticCurvePrivateKey: jwt.algorithms.ECAlgorithm,
                 ed25519.Ed25519PrivateKey: jwt.algorithms.OKPAlgorithm}
    kind = next(cls for base, cls in algorithm.items() if isinstance(private, base))
    return {**kind.to_jwk(private.public_key(), as_dict=True), "kid": kid}


def test_rs256_from_a_pem_file_verifies_and_goalhub_cannot_mint(tmp_path, monkeypatch):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "platform.pem").write_bytes(pem(private))
    monkeypatch.setenv("GOALHUB_JWT_PUBLIC_KEYS", f"2026-12={tmp_path / 'platform.pem'}")

    principal = auth.verify_token(sign(private, "RS256", "2026-12"))
    assert principal.user_id == STREAMER and principal.scopes == {"CREATOR"}
    with pytest.raises(ValueError, match="platform signs"):
        auth.mint_token(STREAMER)
    assert not (config.home() / auth.DEV_KEYS_FILE).exists()  # no development key beside public keys

    # The kid's algorithm only: an HS256 token naming the RSA kid, keyed with the public key's
    # PEM (the algorithm-confusion attack), is refused before any signature check.
    forged = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "2026-12", "typ": "JWT"}).encode())
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode())
    with pytest.raises(Unauthorized) as refused:
        auth.verify_token(f"{forged.decode().rstrip('=')}.{body.decode().rstrip('=')}.AAAA")
    assert refused.value.code == "token_algorithm"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized) as refused:
        auth.verify_token(sign(other, "RS256", "2026-12"))
    assert refused.value.code == "token_signature"


def test_es256_and_eddsa_from_a_jwks_file_rotate_without_a_restart(tmp_path, monkeypatch):
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    edwards = ed25519.Ed25519PrivateKey.generate()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(old, "old"), jwk(new, "new"), jwk(edwards, "ed")]}))
    monkeypatch.setenv("GOALHUB_JWT_JWKS_FILE", str(jwks))
    old_token, new_token = sign(old, "ES256", "old"), sign(new, "ES256", "new")
    assert auth.verify_token(old_token).user_id == STREAMER
    assert auth.verify_token(new_token).user_id == STREAMER
    assert auth.verify_token(sign(edwards, "EdDSA", "ed")).user_id == STREAMER

    # Rotation, its last step (README): the old kid is retired from the file; no restart.
    time.sleep(0.01)
    jwks.write_text(json.dumps({"keys": [jwk(new, "new"), jwk(edwards, "ed")]}))
    assert auth.verify_token(new_token).user_id == STREAMER
    with pytest.raises(Unauthorized) as refused:
        auth.verify_token(sign(old, "ES256", "old", jti="after-rotation"))
    assert refused.value.code == "token_kid_unknown"


@pytest.mark.parametrize("document, problem", [
    ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}, "private or secret"),
    ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}, "needs a kid"),
    ({"nothing": []}, "not a JWKS document"),
])
def test_a_bad_jwks_file_stops_the_api_with_one_line(tmp_path, monkeypatch, document, problem):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(document))
    env = api_support.process_env(GOALHUB_JWT_JWKS_FILE=str(jwks))
    done = subprocess.run([sys.executable, "-m", "goalhub", "serve", "--port", str(api_support.free_port())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert problem in done.stderr and "Traceback" not in done.stderr


def test_production_without_keys_refuses_to_start(tmp_path):
    env = api_support.process_env(GOALHUB_ENV="production")
    done = subprocess.run([sys.executable, "-m", "goalhub", "serve", "--port", str(api_support.free_port())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "GOALHUB_ENV=production needs keys" in done.stderr and "Traceback" not in done.stderr
    assert not (config.home() / auth.DEV_KEYS_FILE).exists()


def test_secrets_read_from_files(tmp_path, monkeypatch):
    (tmp_path / "password").write_text("from-a-file\n")
    (tmp_path / "keys").write_text(json.dumps({"filed": "x" * 40}))
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("GOALHUB_JWT_KEYS_FILE", str(tmp_path / "keys"))
    assert config.settings().DASHBOARD_PASSWORD == "from-a-file"
    assert list(auth.signing_keys()) == ["filed"]
    assert config.effective()["GOALHUB_DASHBOARD_PASSWORD"] == "***"
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", "the-variable-wins")
    assert config.settings().DASHBOARD_PASSWORD == "the-variable-wins"
    monkeypatch.setenv("GOALHUB_JWT_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(config.ConfigError, match="GOALHUB_JWT_KEYS_FILE=.* cannot be read"):
        config.settings()


def test_metrics_has_a_credential_of_its_own(monkeypatch):
    token = "m" * 40
    monkeypatch.setenv("GOALHUB_METRICS_TOKEN", token)
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", "ops")
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", "dashboard-password")
    client = create_app().test_client()
    basic = base64.b64encode(b"ops:dashboard-password").decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {basic}"}).status_code == 401
    admin = auth.mint_token(STREAMER, ["ADMIN"])
    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {'x' * 40}"}).status_code == 401
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert scraped.status_code == 200 and b"goalhub_queue_depth" in scraped.data
    # ...and it opens nothing else.
    assert client.get("/rq/goalhub/", headers={"Authorization": f"Bearer {token}"}).status_code == 401
