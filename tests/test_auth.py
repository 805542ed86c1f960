"""Bearer tokens: the seed's token shape is accepted, every known attack is refused."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from goalhub import auth
from goalhub.auth import Principal, bearer_principal, mint_token, require_scope, verify_token
from goalhub.errors import Forbidden, Unauthorized

REPO = Path(__file__).resolve().parents[1]
SEED_FILE = "000_b567bc1805cad62a.txt"
# header.payload of seed 000's token (its signature was removed at the source); a copy so
# the tests run where the seeds aren't checked out. test_seed_copy_matches_the_seed keeps it honest.
SEED_000_TOKEN = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiIsImtpZCI6IjBjOTNkZTgzIn0."
    "eyJzdWIiOiI2ODAwYTkwNzNlMGMzNDY1MzE5NThiMDMiLCJqdGkiOiJmc2xORDQ1RGV4Y3I3S0lpIiwiaXNzIjoiYXBp"
    "LnN3YWcubGl2ZSIsImF1ZCI6ImFwaS5zd2FnLmxpdmUiLCJpYXQiOjE3NDY0MTU4NTQsImV4cCI6MTc0NjQxOTQ1NCwid"
    "mVyc2lvbiI6Miwic2NvcGVzIjpbIlBBSUQiLCJIVU1BTiIsIkNSRUFUT1IiXSwibWV0YWRhdGEiOnsiZmluZ2VycHJpbnQi"
    "OiJkMjc5M2RkNCIsImZsYXZvciI6InN3YWcubGl2ZSIsIm9yaWdpbmFsIjp7ImlhdCI6MTc0NTgwNzc5OSwibWV0aG9kIjo"
    "icGFzc3dvcmQifX19"
)
SEED_USER = "6800a9073e0c346531958b03"
SEED_KID = "0c93de83"
OTHER_KID = "1a2b3c4d"


# --- helpers --------------------------------------------------------------------------


def _seed_file() -> Path | None:
    for folder in (REPO / "seeds", REPO.parent / "shared" / "seeds"):
        if (folder / SEED_FILE).is_file():
            return folder / SEED_FILE
    return None


def _seed_header_and_claims() -> tuple[dict, dict]:
    """Seed 000's token header and claims, read from the seed itself when it is here."""
    token = SEED_000_TOKEN
    path = _seed_file()
    if path is not None:
        line = next(ln for ln in path.read_text().splitlines() if "authorization: Bearer" in ln)
        token = ".".join(line.split("Bearer ", 1)[1].split(".")[:2])
    header, payload = token.split(".")
    return _unb64json(header), _unb64json(payload)


def _unb64json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def hs256(header: dict, claims: dict, secret: str | bytes) -> str:
    """A token built by hand, so a test can sign anything an attacker could."""
    key = secret.encode() if isinstance(secret, str) else secret
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def seed_header(**changes: object) -> dict:
    header = _seed_header_and_claims()[0]
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


def seed_claims(**changes: object) -> dict:
    """The seed's claims, moved to now: issued now, valid for an hour."""
    claims = _seed_header_and_claims()[1]
    now = int(time.time())
    claims.update(iat=now, exp=now + 3600)
    claims.update(changes)
    return claims


def refused(token: str, code: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        verify_token(token)
    assert caught.value.code == code, caught.value.message
    assert caught.value.status == 401
    return caught.value


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Two configured keys, generated per run (never a key in the source)."""
    import secrets

    configured = {SEED_KID: secrets.token_urlsafe(48), OTHER_KID: secrets.token_urlsafe(48)}
    monkeypatch.setenv("GOALHUB_HOME", str(tmp_path))
    monkeypatch.setenv("GOALHUB_JWT_KEYS", json.dumps(configured))
    for name in ("GOALHUB_JWT_ISSUER", "GOALHUB_JWT_AUDIENCE", "GOALHUB_JWT_LEEWAY"):
        monkeypatch.delenv(name, raising=False)
    return configured


@pytest.fixture
def rsa_key():
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public_pem


# --- the seed's token -----------------------------------------------------------------


def test_seed_copy_matches_the_seed():
    path = _seed_file()
    if path is None:
        pytest.skip("seed 000 is not checked out here")
    assert SEED_000_TOKEN in path.read_text()


def test_a_seed_shaped_token_signed_with_a_configured_key_is_accepted(keys):
    header = seed_header()
    assert header == {"typ": "JWT", "alg": "HS256", "kid": SEED_KID}

    principal = verify_token(hs256(header, seed_claims(), keys[SEED_KID]))

    assert principal.user_id == SEED_USER
    assert principal.scopes == {"PAID", "HUMAN", "CREATOR"}
    assert principal.token_id == "fslND45Dexcr7KIi"
    assert principal.has_scope("CREATOR") and not principal.has_scope("ADMIN")
    assert principal.claims["metadata"]["original"] == {"iat": 1745807799, "method": "password"}
    require_scope(principal, "CREATOR")  # no exception


def test_the_seed_token_itself_is_long_expired(keys):
    header, claims = _seed_header_and_claims()
    refused(hs256(header, claims, keys[SEED_KID]), "token_expired")


def test_bearer_header_with_any_scheme_case(keys):
    token = hs256(seed_header(), seed_claims(), keys[SEED_KID])
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert bearer_principal(f"{scheme} {token}").user_id == SEED_USER
    assert bearer_principal(f"  Bearer   {token}  ").user_id == SEED_USER


def test_principal_is_frozen_and_keeps_claims_out_of_repr(keys):
    principal = verify_token(hs256(seed_header(), seed_claims(), keys[SEED_KID]))
    with pytest.raises(AttributeError):
        principal.user_id = "0" * 24  # type: ignore[misc]
    assert "fingerprint" not in repr(principal)
    assert hash(principal) == hash(Principal(SEED_USER, principal.scopes, principal.token_id))


def test_upper_case_sub_is_lower_cased_like_every_id(keys):
    principal = verify_token(hs256(seed_header(), seed_claims(sub=SEED_USER.upper()), keys[SEED_KID]))
    assert principal.user_id == SEED_USER


def test_leeway_tolerates_small_clock_skew(keys, monkeypatch):
    token = hs256(seed_header(), seed_claims(exp=int(time.time()) - 5), keys[SEED_KID])
    refused(token, "token_expired")
    monkeypatch.setenv("GOALHUB_JWT_LEEWAY", "30")
    assert verify_token(token).user_id == SEED_USER


def test_issuer_and_audience_come_from_configuration(keys, monkeypatch):
    monkeypatch.setenv("GOALHUB_JWT_ISSUER", "auth.example")
    monkeypatch.setenv("GOALHUB_JWT_AUDIENCE", "goalhub.example")
    refused(hs256(seed_header(), seed_claims(), keys[SEED_KID]), "token_issuer")
    token = hs256(seed_header(), seed_claims(iss="auth.example", aud="goalhub.example"), keys[SEED_KID])
    assert verify_token(token).user_id == SEED_USER


# --- kept verdicts (auth._verified) ---------------------------------------------------


def test_a_kept_verdict_still_expires_on_time(keys, monkeypatch):
    now = time.time()
    token = hs256(seed_header(), seed_claims(exp=int(now) + 60), keys[SEED_KID])
    assert verify_token(token).user_id == SEED_USER
    hits = auth._verified.cache_info().hits
    assert verify_token(token).user_id == SEED_USER
    assert auth._verified.cache_info().hits == hits + 1  # the second use was not verified again
    monkeypatch.setattr(auth.time, "time", lambda: now + 61)
    refused(token, "token_expired")
    monkeypatch.setenv("GOALHUB_JWT_LEEWAY", "30")  # the leeway of the kept verdict's own check
    assert verify_token(token).user_id == SEED_USER


def test_a_kept_verdict_follows_the_key_set_and_the_audience(keys, monkeypatch):
    token = hs256(seed_header(), seed_claims(), keys[SEED_KID])
    assert verify_token(token).user_id == SEED_USER
    # The kid's key was rotated out: the token is verified again, and refused.
    monkeypatch.setenv("GOALHUB_JWT_KEYS", json.dumps({OTHER_KID: keys[OTHER_KID]}))
    refused(token, "token_kid_unknown")
    # Its key is back but under a new secret: the old signature no longer holds.
    monkeypatch.setenv("GOALHUB_JWT_KEYS", json.dumps({SEED_KID: keys[OTHER_KID]}))
    refused(token, "token_signature")
    monkeypatch.setenv("GOALHUB_JWT_KEYS", json.dumps(keys))
    assert verify_token(token).user_id == SEED_USER
    monkeypatch.setenv("GOALHUB_JWT_AUDIENCE", "goalhub.example")
    refused(token, "token_audience")


def test_a_refusal_is_never_kept(keys, monkeypatch):
    now = int(time.time())
    token = hs256(seed_header(), seed_claims(nbf=now + 600), keys[SEED_KID])
    auth._verified.cache_clear()
    refused(token, "token_not_yet_valid")
    refused(token, "token_not_yet_valid")
    kept = auth._verified.cache_info()
    assert (kept.currsize, kept.hits, kept.misses) == (0, 0, 2)  # verified twice, kept never
    # Its nbf passes: the same token is verified again, and now passes (a kept refusal would
    # still refuse it). PyJWT reads the clock with datetime.now.
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=601)

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return later

    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    assert verify_token(token).user_id == SEED_USER


# --- attacks and broken tokens --------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(keys, alg):
    unsigned = f"{_segment(seed_header(alg=alg))}.{_segment(seed_claims())}."
    refused(unsigned, "token_algorithm")
    # Nor does a signature make it acceptable.
    refused(hs256(seed_header(alg=alg), seed_claims(), keys[SEED_KID]), "token_algorithm")


def test_alg_missing_is_refused(keys):
    refused(hs256(seed_header(alg=None), seed_claims(), keys[SEED_KID]), "token_algorithm")


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", "hs256"])
def test_any_other_algorithm_is_refused(keys, alg):
    refused(hs256(seed_header(alg=alg), seed_claims(), keys[SEED_KID]), "token_algorithm")


def test_hs_rs_confusion_is_refused(keys, rsa_key):
    _, public_pem = rsa_key
    # The classic confusion: HMAC "signed" with the public key PEM as the secret.
    forged = hs256(seed_header(), seed_claims(), public_pem)
    refused(forged, "token_signature")
    forged_rs_header = hs256(seed_header(alg="RS256"), seed_claims(), public_pem)
    refused(forged_rs_header, "token_algorithm")


def test_a_public_key_is_refused_as_a_configured_secret(keys, rsa_key, monkeypatch):
    _, public_pem = rsa_key
    monkeypatch.setenv("GOALHUB_JWT_KEYS", json.dumps({SEED_KID: public_pem.decode()}))
    with pytest.raises(ValueError, match="looks like a public/private key"):
        verify_token(hs256(seed_header(), seed_claims(), public_pem))


def test_an_rs256_token_is_refused(keys, rsa_key):
    private, _ = rsa_key
    token = jwt.encode(seed_claims(), private, algorithm="RS256", headers={"kid": SEED_KID})
    refused(token, "token_algorithm")


def test_an_unknown_kid_is_refused_even_when_signed_with_a_configured_key(keys):
    # Signed with a real key: a verifier that tried every key would accept it.
    refused(hs256(seed_header(kid="deadbeef"), seed_claims(), keys[SEED_KID]), "token_kid_unknown")


def test_a_kid_only_verifies_with_its_own_key(keys):
    refused(hs256(seed_header(kid=SEED_KID), seed_claims(), keys[OTHER_KID]), "token_signature")
    assert verify_token(hs256(seed_header(kid=OTHER_KID), seed_claims(), keys[OTHER_KID]))


@pytest.mark.parametrize("kid", [None, ""])
def test_a_missing_kid_is_refused(keys, kid):
    refused(hs256(seed_header(kid=kid), seed_claims(), keys[SEED_KID]), "token_kid_missing")


@pytest.mark.parametrize("kid", [["0c93de83"], 12345678, {"a": 1}])
def test_a_kid_that_is_not_a_string_is_refused(keys, kid):
    with pytest.raises(Unauthorized):
        verify_token(hs256(seed_header(kid=kid), seed_claims(), keys[SEED_KID]))


def test_a_bad_signature_is_refused(keys):
    token = hs256(seed_header(), seed_claims(), keys[SEED_KID])
    header, _, signature = token.split(".")
    # Claims swapped under an intact signature: someone else's user id.
    tampered = f"{header}.{_segment(seed_claims(sub='0' * 24))}.{signature}"
    refused(tampered, "token_signature")
    refused(hs256(seed_header(), seed_claims(), "not the key " * 4), "token_signature")
    refused(f"{header}.{token.split('.')[1]}.", "token_signature")


def test_an_expired_token_is_refused(keys):
    now = int(time.time())
    refused(
        hs256(seed_header(), seed_claims(iat=now - 7200, exp=now - 3600), keys[SEED_KID]), "token_expired"
    )


def test_a_token_not_yet_valid_is_refused(keys):
    now = int(time.time())
    refused(hs256(seed_header(), seed_claims(nbf=now + 600), keys[SEED_KID]), "token_not_yet_valid")
    refused(hs256(seed_header(), seed_claims(iat=now + 600), keys[SEED_KID]), "token_not_yet_valid")


@pytest.mark.parametrize("aud", ["swag.live", "", ["other.example"], None])
def test_the_wrong_audience_is_refused(keys, aud):
    claims = seed_claims(aud=aud)
    if aud is None:
        del claims["aud"]
    refused(hs256(seed_header(), claims, keys[SEED_KID]), "token_audience")


@pytest.mark.parametrize("iss", ["evil.example", "", None])
def test_the_wrong_issuer_is_refused(keys, iss):
    claims = seed_claims(iss=iss)
    if iss is None:
        del claims["iss"]
    refused(hs256(seed_header(), claims, keys[SEED_KID]), "token_issuer")


@pytest.mark.parametrize("claim", ["exp", "sub"])
def test_a_missing_required_claim_is_refused(keys, claim):
    claims = seed_claims()
    del claims[claim]
    error = refused(hs256(seed_header(), claims, keys[SEED_KID]), "token_claims")
    assert claim in error.message


@pytest.mark.parametrize(
    "sub",
    [
        "abc",
        "6800a9073e0c346531958b0",
        "6800a9073e0c346531958b033",
        "6800a9073e0c346531958b0g",
        SEED_USER + "\n",
        {"$ne": None},
        6800,
        ["6800a9073e0c346531958b03"],
        "",
    ],
)
def test_a_sub_that_is_not_a_24_hex_id_is_refused(keys, sub):
    refused(hs256(seed_header(), seed_claims(sub=sub), keys[SEED_KID]), "token_claims")


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "tomorrow"},
        {"exp": True},
        {"exp": float("inf")},  # Python's json writes and reads Infinity: a never-expiring token
        {"exp": 1e400},
        {"nbf": "now"},
        {"iat": [1]},
        {"scopes": "CREATOR"},
        {"scopes": ["CREATOR", 1]},
        {"jti": 7},
    ],
)
def test_claims_of_the_wrong_type_are_refused(keys, changes):
    refused(hs256(seed_header(), seed_claims(**changes), keys[SEED_KID]), "token_claims")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "...",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJ.eyJ.sig",
        "!!!.!!!.!!!",
        _segment({"alg": "HS256"})[:-2] + ".e30.x",
        _b64(b"[1,2]") + ".e30.x",
        "x" * 100_000,
    ],
)
def test_garbage_is_refused(keys, token):
    refused(token, "token_malformed")


def test_a_payload_that_is_not_an_object_is_refused(keys):
    signing_input = f"{_segment(seed_header())}.{_b64(b'[1, 2, 3]')}"
    signature = hmac.new(keys[SEED_KID].encode(), signing_input.encode(), hashlib.sha256).digest()
    refused(f"{signing_input}.{_b64(signature)}", "token_malformed")


def test_a_detached_payload_header_is_refused(keys):
    token = hs256(seed_header(b64=False, crit=["b64"]), seed_claims(), keys[SEED_KID])
    with pytest.raises(Unauthorized):
        verify_token(token)


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_token_is_missing(keys, token):
    refused(token, "token_missing")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_authorization_header_is_refused(keys, value):
    with pytest.raises(Unauthorized) as caught:
        bearer_principal(value)
    assert caught.value.code == "token_missing"


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Token abc", "Bearer:abc", "JWT x.y.z"]
)
def test_an_odd_authorization_header_is_refused(keys, value):
    with pytest.raises(Unauthorized) as caught:
        bearer_principal(value)
    assert caught.value.code == "token_malformed"


def test_a_missing_scope_is_forbidden(keys):
    principal = verify_token(hs256(seed_header(), seed_claims(scopes=["PAID", "HUMAN"]), keys[SEED_KID]))
    with pytest.raises(Forbidden) as caught:
        require_scope(principal, "CREATOR")
    assert (caught.value.status, caught.value.code) == (403, "scope_missing")
    assert caught.value.to_dict()["error"]["code"] == "scope_missing"
    no_scopes = seed_claims()
    del no_scopes["scopes"]
    with pytest.raises(Forbidden):
        require_scope(verify_token(hs256(seed_header(), no_scopes, keys[SEED_KID])), "CREATOR")


def test_refusals_serialise_as_the_api_error(keys):
    error = refused(hs256(seed_header(kid="deadbeef"), seed_claims(), keys[SEED_KID]), "token_kid_unknown")
    assert error.to_dict() == {"error": {"code": "token_kid_unknown", "message": error.message}}
    assert "deadbeef" not in error.message  # nothing attacker-chosen is echoed


# --- minting --------------------------------------------------------------------------


def test_minted_tokens_are_shaped_like_the_seed_and_verify(keys):
    token = mint_token(SEED_USER, scopes=["PAID", "HUMAN", "CREATOR"])
    header, payload, _ = token.split(".")
    seed_hdr, seed_cl = _seed_header_and_claims()

    assert _unb64json(header) == seed_hdr
    assert list(_unb64json(header)) == ["typ", "alg", "kid"]  # the seed's order too
    claims = _unb64json(payload)
    assert list(claims) == list(seed_cl)
    assert list(claims["metadata"]) == list(seed_cl["metadata"])
    assert claims["metadata"]["flavor"] == "swag.live"
    assert claims["metadata"]["original"]["method"] == "password"
    assert len(claims["jti"]) == 16 and claims["version"] == 2
    assert claims["exp"] - claims["iat"] == 3600

    principal = verify_token(token)
    assert principal.user_id == SEED_USER
    assert principal.scopes == {"PAID", "HUMAN", "CREATOR"}
    assert principal.token_id == claims["jti"]


def test_mint_with_another_kid_ttl_and_extra_claims(keys):
    token = mint_token(SEED_USER, kid=OTHER_KID, ttl=60, extra={"nbf": int(time.time()) + 600})
    assert jwt.get_unverified_header(token)["kid"] == OTHER_KID
    refused(token, "token_not_yet_valid")
    assert verify_token(mint_token(SEED_USER)).scopes == {"CREATOR"}
    refused(mint_token(SEED_USER, extra={"exp": int(time.time()) - 10}), "token_expired")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sub": "nope"}, ValueError),
        ({"sub": SEED_USER, "kid": "deadbeef"}, ValueError),
        ({"sub": SEED_USER, "ttl": 0}, ValueError),
        ({"sub": SEED_USER, "scopes": "CREATOR"}, TypeError),
    ],
)
def test_mint_refuses_what_verify_would(keys, kwargs, error):
    with pytest.raises(error):
        mint_token(**kwargs)


# --- key configuration ----------------------------------------------------------------


def test_keys_in_kid_colon_secret_form(keys, monkeypatch):
    monkeypatch.setenv("GOALHUB_JWT_KEYS", f"{OTHER_KID}:{keys[OTHER_KID]}, {SEED_KID}:{keys[SEED_KID]}")
    assert list(auth.signing_keys()) == [OTHER_KID, SEED_KID]
    assert jwt.get_unverified_header(mint_token(SEED_USER))["kid"] == OTHER_KID  # first kid signs
    assert verify_token(hs256(seed_header(), seed_claims(), keys[SEED_KID])).user_id == SEED_USER


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not a valid JSON object"),
        ("[]", "must be a JSON object"),
        ("{}", "holds no keys"),
        ('{"k": "short"}', "shorter than 32 bytes"),
        ('{"k": 1}', "string secret"),
        ('{"k": "' + "a" * 40 + '", "k": "' + "b" * 40 + '"}', "listed twice"),
        ("justasecretwithoutakid", "kid:secret"),
        (":" + "a" * 40, "non-empty kid"),
    ],
)
def test_bad_key_configuration_is_an_operator_error(keys, monkeypatch, value, message):
    monkeypatch.setenv("GOALHUB_JWT_KEYS", value)
    with pytest.raises(ValueError, match=message) as caught:
        auth.signing_keys()
    assert "a" * 40 not in str(caught.value)  # secrets are never echoed


# --- the development key --------------------------------------------------------------


@pytest.fixture
def dev_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "dev-home"  # a folder of its own: the tests list what is in it
    monkeypatch.setenv("GOALHUB_HOME", str(home))
    for name in ("GOALHUB_JWT_KEYS", "GOALHUB_JWT_ISSUER", "GOALHUB_JWT_AUDIENCE", "GOALHUB_JWT_LEEWAY"):
        monkeypatch.delenv(name, raising=False)
    return home


def _kids_in_another_process(home: Path, count: int = 1) -> list[list[str]]:
    """Start ``count`` fresh interpreters at once, each loading the key set from ``home``."""
    start = time.time() + 1.0  # all of them wait for the same instant, to race for real
    code = (
        "import json, sys, time\n"
        f"time.sleep(max(0, {start} - time.time()))\n"
        "from goalhub import auth\n"
        "print(json.dumps(list(auth.signing_keys())))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GOALHUB_JWT_KEYS"}
    env.update(GOALHUB_HOME=str(home), PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out))
    return results


def test_the_dev_key_is_generated_once_and_reused(dev_home):
    token = mint_token(SEED_USER)
    kids = list(auth.signing_keys())
    assert len(kids) == 1 and len(kids[0]) == 8 and int(kids[0], 16) >= 0
    assert list(auth.signing_keys()) == kids
    assert jwt.get_unverified_header(token)["kid"] == kids[0]
    assert verify_token(token).user_id == SEED_USER

    path = dev_home / auth.DEV_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = json.loads(path.read_text())[kids[0]]
    assert len(secret) >= 64
    # A second process reading the same home uses the same key.
    assert _kids_in_another_process(dev_home) == [kids]
    assert sorted(p.name for p in dev_home.iterdir()) == [auth.DEV_KEYS_FILE]  # no temp files left


def test_processes_starting_at_once_agree_on_one_dev_key(dev_home):
    results = _kids_in_another_process(dev_home, count=8)
    assert all(kids == results[0] for kids in results)
    assert list(auth.signing_keys()) == results[0]
    assert sorted(p.name for p in dev_home.iterdir()) == [auth.DEV_KEYS_FILE]


def test_a_process_that_loses_the_race_never_replaces_the_key(dev_home):
    kids = list(auth.signing_keys())
    # What a process that also saw no file does next: create its own key and try to install it.
    auth._create_dev_keys(dev_home / auth.DEV_KEYS_FILE)
    assert list(auth.signing_keys()) == kids
    assert sorted(p.name for p in dev_home.iterdir()) == [auth.DEV_KEYS_FILE]


def test_the_dev_key_is_created_private_whatever_the_umask(dev_home):
    old = os.umask(0)
    try:
        auth.signing_keys()
    finally:
        os.umask(old)
    assert stat.S_IMODE((dev_home / auth.DEV_KEYS_FILE).stat().st_mode) == 0o600
