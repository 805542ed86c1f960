"""Bearer-token attacks end to end, through every route (Flask's test client on the real app
with the real plugins): each refused with the right status and code, and nothing written.
The RQ dashboard and every other admin surface refuse unauthenticated callers."""

from __future__ import annotations

import base64
import json
import secrets
import time
from types import SimpleNamespace

import jwt
import pytest
from bson import ObjectId
from werkzeug.routing import IntegerConverter

from goalhub.api import create_app
from goalhub.auth import mint_token

from . import support

pytestmark = pytest.mark.reliability

KID, OTHER_KID = "0c93de83", "1a2b3c4d"


@pytest.fixture
def keys(monkeypatch):
    configured = {KID: secrets.token_urlsafe(48), OTHER_KID: secrets.token_urlsafe(48)}
    monkeypatch.setenv("GOALHUB_JWT_KEYS", json.dumps(configured))
    return configured


@pytest.fixture
def api(db, keys, use_plugins):
    use_plugins(*support.PLUGINS)
    world = support.make_world(db)
    other = ObjectId()
    db.sessions.insert_one({"_id": other, "user": support.OTHER, "active": True, "sources": [],
                            "exclusive_goal_pairs": {}, "show_goal_pairs": []})
    goal = ObjectId()
    db.goals.insert_one({"_id": goal, "_cls": "KaraokeGoal", "active": True,
                         "conditions": {"session_id": world.session}, "levels": [{"target": 10}],
                         "nbf": None, "exp": None, "context": {"type": "karaoke", "session_id": world.session},
                         "metadata": {"user_id": support.STREAMER}})
    return SimpleNamespace(client=create_app().test_client(), world=world, other_session=str(other),
                           goal=str(goal), keys=keys)


def claims(**changes) -> dict:
    now = int(time.time())
    base = {"sub": support.STREAMER, "jti": "j", "iss": "api.swag.live", "aud": "api.swag.live", "iat": now,
            "exp": now + 600, "version": 2, "scopes": ["PAID", "HUMAN", "CREATOR"], "metadata": {}}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(keys, payload=None, kid=KID, secret=None, algorithm="HS256") -> str:
    return jwt.encode(payload or claims(), secret or keys[kid], algorithm=algorithm, headers={"kid": kid})


def unsigned(payload: dict, header: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


def attacks(keys) -> dict[str, tuple[str, int, str]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    # HS/RS confusion: the server's "public key" used as an HMAC secret. PyJWT refuses to
    # sign with a PEM as HMAC key, so the signature is made by hand.
    import hashlib
    import hmac

    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": KID}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    mac = hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    confused = (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    now = int(time.time())
    return {
        "alg none": (unsigned(claims(), {"alg": "none", "kid": KID}), 401, "token_algorithm"),
        "alg None": (unsigned(claims(), {"alg": "None", "kid": KID}), 401, "token_algorithm"),
        "HS/RS confusion": (confused, 401, "token_signature"),
        "RS256 token": (jwt.encode(claims(), private, algorithm="RS256", headers={"kid": KID}), 401, "token_algorithm"),
        "unknown kid": (signed(keys, kid="ffffffff", secret=keys[KID]), 401, "token_kid_unknown"),
        "other kid's key": (signed(keys, kid=KID, secret=keys[OTHER_KID]), 401, "token_signature"),
        "bad signature": (signed(keys)[:-4] + "AAAA", 401, "token_signature"),
        "expired": (signed(keys, claims(iat=now - 7200, exp=now - 3600)), 401, "token_expired"),
        "not yet valid": (signed(keys, claims(nbf=now + 3600)), 401, "token_not_yet_valid"),
        "wrong aud": (signed(keys, claims(aud="api.evil.example")), 401, "token_audience"),
        "wrong iss": (signed(keys, claims(iss="evil.example")), 401, "token_issuer"),
        "missing sub": (signed(keys, claims(sub=None)), 401, "token_claims"),
        "missing exp": (signed(keys, claims(exp=None)), 401, "token_claims"),
        "sub operator": (signed(keys, claims(sub={"$ne": None})), 401, "token_claims"),
        "garbage": ("not.a.token", 401, "token_malformed"),
    }


def routes(api) -> list[tuple[str, str, dict | None]]:
    world = api.world
    exclusive = {"levels": [{"target": 300}], "nbf": round(time.time(), 3),
                 "context": {"session_id": world.session, "trigger_exclusive_goal_id": world.trigger}}
    return [
        ("POST", "/goals?type=exclusive", exclusive),
        ("POST", "/goal?goal_type=exclusive&lang=zh-hant", exclusive),
        ("POST", "/sessions", {"sources": []}),
        ("POST", f"/sessions/{world.session}/end", None),
        ("POST", f"/goals/{api.goal}/end", None),
        ("GET", f"/goals/{api.goal}", None),
        ("GET", f"/sessions/{world.session}", None),
    ]


def call(api, method: str, path: str, body, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return api.client.open(path, method=method, headers=headers, json=body)


def test_every_token_attack_is_refused_on_every_route_and_writes_nothing(api, db, capsys):
    before = support.state(db)
    tried = 0
    cases = attacks(api.keys)
    cases["no token"] = (None, 401, "token_missing")
    cases["missing scope"] = (signed(api.keys, claims(scopes=["PAID", "HUMAN"])), 403, "scope_missing")
    for name, (token, status, code) in cases.items():
        for method, path, body in routes(api):
            if name == "missing scope" and method == "GET":
                continue  # reading needs no scope: the owner may read
            response = call(api, method, path, body, token)
            assert response.status_code == status, (name, path, response.get_json())
            assert support.error_model(response)["code"] == code, (name, path)
            tried += 1
    assert support.state(db) == before
    with capsys.disabled():
        print(f"\n[reliability] token attacks: {len(cases)} kinds x routes = {tried} refused requests, nothing written")
    # The control: the same requests with a valid token do go through.
    valid = signed(api.keys)
    assert call(api, "GET", f"/goals/{api.goal}", None, valid).status_code == 200
    assert call(api, *routes(api)[0][:2], routes(api)[0][2], valid).status_code == 202


def test_a_valid_token_of_streamer_a_cannot_touch_streamer_b(api, db):
    other = mint_token(support.OTHER)  # a valid CREATOR token, of another streamer
    world = api.world
    before = support.state(db)
    exclusive = {"levels": [{"target": 300}], "nbf": round(time.time(), 3),
                 "context": {"session_id": world.session, "trigger_exclusive_goal_id": world.trigger}}
    show = {"levels": [{"target": 300}], "context": {"session_id": world.session, "funding_goal_id": world.funding}}
    countdown = {"levels": [{"target": 60}], "context": {"session_id": world.session},
                 "nbf": round(time.time(), 3), "exp": round(time.time() + 60, 3)}
    cases = [
        ("POST", "/goals?type=exclusive", exclusive, "session_not_owned"),
        ("POST", "/goals?goal_type=show", show, "session_not_owned"),
        ("POST", "/goals?type=trigger_exclusive", countdown, "session_not_owned"),
        ("POST", "/goals?type=show_funding", countdown, "session_not_owned"),
        ("POST", "/goals?type=karaoke", {"levels": [{"target": 5}], "context": {"session_id": world.session}},
         "session_not_owned"),
        ("POST", "/goals?type=trigger_private", countdown, "session_not_owned"),
        ("POST", f"/sessions/{world.session}/end", None, "session_not_owned"),
        ("POST", f"/goals/{api.goal}/end", None, "goal_not_owned"),
        ("GET", f"/goals/{api.goal}", None, "goal_not_owned"),
        ("GET", f"/sessions/{world.session}", None, "session_not_owned"),
        # B's own session with A's trigger goal: the trigger is not of that session.
        ("POST", "/goals?type=exclusive", {**exclusive, "context": {"session_id": api.other_session,
                                                                     "trigger_exclusive_goal_id": world.trigger}},
         "goal_of_another_session"),
    ]
    for method, path, body, code in cases:
        response = api.client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {other}"})
        assert response.status_code in (403, 404, 422), (path, response.get_json())
        assert support.error_model(response)["code"] == code, (path, response.get_json())
    assert support.state(db) == before


def test_the_dashboard_and_admin_surfaces_refuse_unauthenticated_callers(api, db, monkeypatch, capsys):
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", "ops")
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", "a long dashboard password")
    # Every route is tried with a wrong password: the failed-login throttle (tested on its own
    # in test_dashboard.py) would answer 429 after the first ten.
    monkeypatch.setenv("GOALHUB_DASHBOARD_LOGIN_LIMIT", "off")
    app = api.client.application
    creator = mint_token(support.STREAMER)  # a valid token, without ADMIN
    wrong = "Basic " + base64.b64encode(b"ops:guess").decode()
    before = support.state(db)
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/rq"):
            continue
        values = {arg: 1 if isinstance(rule._converters[arg], IntegerConverter) else "goalhub"
                  for arg in rule.arguments if arg in rule._converters}
        path = app.url_map.bind("localhost").build(rule.endpoint, values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for header, status in ((None, 401), (f"Bearer {creator}", 403), (wrong, 401)):
                headers = {"Authorization": header} if header else {}
                response = api.client.open(path, method=method, headers=headers)
                assert response.status_code == status, (method, path, header, response.status_code)
                support.error_model(response)
                checked += 1
    assert checked > 20
    with capsys.disabled():
        print(f"\n[reliability] dashboard: {checked} unauthenticated or non-admin requests refused")
    assert support.state(db) == before
    # No other route answers without a token, except health and static files.
    open_routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/rq") or "GET" not in rule.methods or rule.arguments:
            continue
        if api.client.get(rule.rule).status_code < 400:
            open_routes.add(rule.rule)
    # The API's contract and its page are public too: they hold no secret, and every
    # operation they list still needs its token (issue 13).
    assert open_routes == {"/healthz", "/readyz", "/openapi.json", "/docs/"}
