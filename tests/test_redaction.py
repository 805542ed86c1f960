"""Redaction (goalhub.redaction): secrets in URLs, parameters and headers are removed from
what operators see; clients see an error's class and code only (issue 12, row 3). Every form a
secret takes in an operator-facing text, table-driven, and a hypothesis fuzz test that places a
secret at random in generated dicts, JSON, reprs and URLs (issue 22, rows 3 and 10).
"""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from world import SECRET_URL, STREAMER, bearer

import goalhub
from goalhub import config, outbound, redaction, tasks
from goalhub.redaction import redact


@pytest.mark.parametrize("text, secret", [
    (SECRET_URL, "hunter2"),
    (SECRET_URL, "abc123"),
    ("POST https://api.example.com/v1?api_key=K3Y&x=1 failed", "K3Y"),
    ("redis://:s3cret@cache:6379/0 refused", "s3cret"),
    ("headers={'Authorization': 'HMAC-SHA256 Credential=AKLT/2024/rtc, Signature=deadbeef'}", "deadbeef"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig rejected", "eyJhbGciOiJIUzI1NiJ9"),
    ("https://sink.example.com/hook?client_secret=zz9&signature=ab", "zz9"),
])
def test_redact_removes_url_credentials_secret_parameters_and_authorization(text, secret):
    redacted = redaction.redact(text)
    assert secret not in redacted and "***" in redacted


def test_redact_keeps_what_is_not_secret():
    text = "HTTPError: 503 Server Error for url: https://sink.example.com/hook?region=sg&goal=1"
    assert redaction.redact(text) == text


class Leaky:
    @goalhub.receiver("goal.created", "ExclusiveGoal")
    def leak(self, goal_id):
        import requests

        raise requests.HTTPError(f"401 Client Error: Unauthorized for url: {SECRET_URL}")


def test_clients_see_an_error_class_and_code_operators_the_redacted_detail(client, db, inline_plugin, drain,
                                                                           monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    inline_plugin(Leaky(), "leaky")
    gid = str(ObjectId())
    tasks.enqueue_create_goal({"_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {},
                               "levels": [{"target": 1}], "nbf": None, "exp": None, "context": {},
                               "metadata": {"user_id": STREAMER}})
    drain()
    seen = client.get(f"/goals/{gid}", headers=bearer()).get_json()
    failed = next(o for o in seen["outcomes"] if o["receiver"] == "leak")
    assert failed["status"] == "failed"
    assert failed["error_class"] == "HTTPError" and failed["error_code"] == "http_error"
    assert "error" not in failed and "traceback" not in failed
    assert "sink.example.com" not in str(seen)
    stored = db.outcomes.find_one({"goal_id": gid, "receiver": "leak"})
    assert "HTTPError: 401 Client Error" in stored["error"] and "https://***@sink.example.com" in stored["error"]
    for secret in ("hunter2", "abc123"):
        assert secret not in stored["error"] and secret not in stored["traceback"]


def test_an_outbound_records_error_is_redacted(db):
    def send():
        raise ConnectionError(f"cannot reach {SECRET_URL}")

    with pytest.raises(ConnectionError):
        outbound.send_once("sink", "k1", {"a": 1}, send, goal_id="g")
    record = db.outbound.find_one({"_id": "sink:k1"})
    assert "hunter2" not in record["error"] and "abc123" not in record["error"] and "***" in record["error"]


S = "Zq7SECRETv9"


@pytest.mark.parametrize("text", [
    # name: value and name = value, quoted or not, in dicts, JSON and reprs
    f"{{'client_secret': '{S}'}}",
    f'{{"api_key": "{S}"}}',
    f'"api_key": "{S}"',
    f"password = {S}",
    f"password: {S}",
    f'token="{S}"',
    f"Foo(token='{S}', n=1)",
    f"Client(password='0000&{S}')",  # a repr's last keyword: ")" ends the quoted value (hypothesis found it)
    json.dumps({"outer": json.dumps({"apiKey": S})}),
    repr({"nested": {"credentials": {"pw": S}}}),
    repr({"note": "it's", "refresh_token": f"a'b\"{S}"}),
    # headers
    f"X-Api-Key: {S}",
    f"x-api-key:{S}",
    f"{{'X-Api-Key': '{S}'}}",
    f"Authorization: Bearer {S}",
    f"Authorization: Basic {S}",
    f"Cookie: theme=dark; sessionid={S}",
    f"Set-Cookie: session={S}; Path=/",
    # the names the issue adds
    f"GET /callback?jwt={S}&next=/",
    f"pass={S}&user=ops",
    f"session={S}",
    f"db_pass: {S}",
    # bare JWTs
    f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{S}",
    f"rejected eyJhbGciOiJIUzI1NiJ9.eyJ{S}.sig",
    # URLs: userinfo split at the last @, secret query parameters
    f"https://u:{S}@h.example/x",
    f"https://u:p@{S}@h.example/x",
    f"https://{S}@h.example/x",
    f"unix:///x.sock?password={S}",
    f"mongodb://h1,h2/?authSource=admin&Password={S}",
    f"Max retries exceeded with url: /notify?apikey={S} (Caused by NewConnectionError)",
])
def test_every_form_of_a_secret_is_redacted(text):
    redacted = redact(text)
    assert S not in redacted and "***" in redacted, redacted


@pytest.mark.parametrize("text", [
    "HTTPError: 503 Server Error for url: https://sink.example.com/hook?region=sg&goal=1",
    "KeyError: 'api_key'",
    "invalid context.session_id=5f0c8a0b1c2d3e4f5a6b7c8d",
    "mongodb://db.example/?authSource=admin&replicaSet=rs0",
    "GET /goals/5f0c8a0b1c2d3e4f5a6b7c8d 200",
])
def test_what_is_not_secret_is_kept(text):
    assert redact(text) == text


def test_the_userinfo_is_split_at_its_last_at():
    assert redact("https://u:p@ss@h.example/x") == "https://***@h.example/x"
    assert redact("https://u:p@ss@h.example/x", keep_user=True) == "https://u:***@h.example/x"


@pytest.mark.parametrize("value, secret", [
    ("unix:///x.sock?password=hunter2", "hunter2"),
    ("mongodb://app@db/?authMechanism=PLAIN&Password=hunter2", "hunter2"),
    ("redis://app:p@ss@cache:6379/0", "ss@cache"),
    ("redis://app:p@ss@cache:6379/0", "p@ss"),
])
def test_config_masks_secret_query_parameters_and_splits_userinfo_at_the_last_at(value, secret):
    shown = config.mask(value, "url")
    assert secret not in shown and "***" in shown, shown
    assert shown.endswith("cache:6379/0") or "db/" in shown or "x.sock" in shown


# --- fuzz ---------------------------------------------------------------------------------------

SECRET_NAMES = ["password", "passwd", "pass", "db_pass", "token", "access_token", "refreshToken", "api_key",
                "apiKey", "x-api-key", "X-Api-Key", "client_secret", "secret", "jwt", "session", "sessionid",
                "cookie", "Authorization", "auth", "private_key", "signature", "credentials", "pwd"]
PLAIN_NAMES = ["name", "goal_id", "region", "url", "note", "levels", "session_id", "count", "kind", "user"]
# Secrets as they come: long enough to be told apart from the text around them.
URL_SAFE = string.ascii_letters + string.digits + "-._~!$'()*+,;=%"
secrets_any = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=10, max_size=30)
secrets_url = st.text(alphabet=URL_SAFE.replace("=", "").replace(";", "").replace(",", ""), min_size=10,
                      max_size=30)
plain_values = st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.none(),
                         st.lists(st.integers(), max_size=3))


@st.composite
def documents(draw, secret):
    """A dict (maybe nested) with ``secret`` under a secret's name somewhere in it."""
    doc = draw(st.dictionaries(st.sampled_from(PLAIN_NAMES), plain_values, max_size=4))
    name = draw(st.sampled_from(SECRET_NAMES))
    depth = draw(st.integers(0, 2))
    inner: dict = {name: secret}
    for _ in range(depth):
        inner = {draw(st.sampled_from(PLAIN_NAMES + SECRET_NAMES)): inner}
    items = list(doc.items())
    at = draw(st.integers(0, len(items)))
    items.insert(at, next(iter(inner.items())))
    # The secret is to be found only where it was put.
    assume(apart(secret, repr(doc)))
    return dict(items)


def apart(secret: str, text: str) -> bool:
    """No 5 characters of ``secret`` are in ``text``."""
    return not any(secret[i:i + 5] in text for i in range(len(secret) - 4))


def survives(secret: str, text: str, redacted: str) -> list[str]:
    """The secret, or a half of it, found in ``redacted`` (unless that half is in the text
    around the secret anyway)."""
    around = text.replace(secret, "")
    half = len(secret) // 2
    return [piece for piece in (secret, secret[:half], secret[half:])
            if len(piece) >= 5 and piece in redacted and piece not in around]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), secret=secrets_any)
def test_a_secret_in_a_dict_json_or_repr_never_survives(data, secret):
    doc = data.draw(documents(secret))
    form = data.draw(st.sampled_from(["repr", "json", "json-in-json", "kwargs", "log"]))
    if form == "repr":
        text = repr(doc)
    elif form == "json":
        text = json.dumps(doc, ensure_ascii=data.draw(st.booleans()))
    elif form == "json-in-json":
        text = json.dumps({"body": json.dumps(doc)})
    elif form == "kwargs":
        text = "Client(" + ", ".join(f"{k.replace('-', '_')}={v!r}" for k, v in doc.items()) + ")"
    else:
        prefix = data.draw(st.text(alphabet=string.ascii_letters + " :", max_size=20))
        assume(apart(secret, prefix))
        text = f"{prefix} failed with {doc!r}"
    assert not survives(secret, text, redact(text)), (text, redact(text))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), secret=secrets_url)
def test_a_secret_in_a_url_never_survives(data, secret):
    scheme = data.draw(st.sampled_from(["https", "http", "redis", "rediss", "mongodb", "unix", "amqp"]))
    host = data.draw(st.sampled_from(["h.example", "10.0.0.1:6379", "cache", "db1,db2"]))
    path = data.draw(st.sampled_from(["", "/", "/notify", "/v1/hook"]))
    plain = data.draw(st.lists(st.tuples(st.sampled_from(PLAIN_NAMES), st.text(alphabet=string.ascii_lowercase,
                                                                                max_size=6)), max_size=3))
    where = data.draw(st.sampled_from(["password", "user", "query", "user-and-at"]))
    params = [f"{k}={v}" for k, v in plain]
    if where == "query":
        name = data.draw(st.sampled_from([n for n in SECRET_NAMES if "-" not in n]))
        params.insert(data.draw(st.integers(0, len(params))), f"{name}={quote(secret, safe=URL_SAFE)}")
        userinfo = ""
    elif where == "password":
        userinfo = f"ops:{secret}@"
    elif where == "user-and-at":
        userinfo = f"ops:{secret[:4]}@{secret[4:]}@"
    else:
        userinfo = f"{secret}@"
    url = f"{scheme}://{userinfo}{host}{path}" + (f"?{'&'.join(params)}" if params else "")
    around = data.draw(st.sampled_from(["plain", "POST {} failed", "url: {}", "dict", "json", "exception"]))
    text = {"plain": url, "dict": repr({"sink": url}), "json": json.dumps({"sink": url}),
            "exception": repr(ConnectionError(url))}.get(around) or around.format(url)
    assert not survives(secret, text, redact(text)), (text, redact(text))
