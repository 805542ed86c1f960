"""Bad input against every route, with the real plugins loaded (Flask's test client on the
real app): generated bodies, ids, query strings and headers (``hypothesis``), then a fixed
corpus of known attacks. A refused request never gives a 5xx, always answers in the JSON
error model, and writes nothing (every collection, every Redis key and the queues are
compared before and after)."""

from __future__ import annotations

import json
import time
from collections import Counter
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goalhub.api import create_app
from goalhub.auth import mint_token

from . import support

pytestmark = pytest.mark.reliability

GOAL_TYPES = ["exclusive", "show", "trigger_exclusive", "show_funding", "karaoke", "trigger_private"]
OPERATORS = [{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$where": "1"}, {"$in": []}, {"$exists": True}]
EXAMPLES = 350

scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(scalars | st.sampled_from(OPERATORS),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10) | st.sampled_from(["$ne", "$set", "a.b"]),
                                             inner, max_size=4),
                           max_leaves=12)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@pytest.fixture
def api(db, use_plugins):
    use_plugins(*support.PLUGINS)
    world = support.make_world(db)
    token = mint_token(support.STREAMER, ["PAID", "HUMAN", "CREATOR"])
    return create_app().test_client(), world, token


def check(response, db, before, tally: Counter) -> None:
    assert response.status_code < 500, (response.status_code, response.data[:300])
    if response.status_code >= 400:
        support.error_model(response)
        assert support.state(db) == before, "a refused request wrote something"
        tally["refused"] += 1
    else:
        tally["accepted"] += 1  # a generated request that happened to be valid
    tally[response.status_code] += 1


def test_generated_requests_never_5xx_never_write_always_the_error_model(api, db, capsys):
    client, world, token = api
    ids = (st.sampled_from([world.session, world.trigger, world.funding, "0" * 24, "F" * 24])
           | st.text(max_size=30) | st.sampled_from(OPERATORS) | json_values)
    goal_bodies = st.fixed_dictionaries(
        {"levels": json_values | st.lists(st.fixed_dictionaries({"target": json_values}), max_size=3),
         "context": st.fixed_dictionaries({"session_id": ids}, optional={
             "trigger_exclusive_goal_id": ids, "funding_goal_id": ids, "exclusive_to": json_values}) | json_values},
        optional={"nbf": json_values, "exp": json_values, "extra": json_values})
    tally: Counter = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def run(data):
        route = data.draw(st.sampled_from(["create", "create", "create", "goal", "end_goal", "session",
                                           "end_session", "get_session", "sessions"]))
        query = data.draw(st.dictionaries(st.sampled_from(["type", "goal_type", "lang", "x"]),
                                          st.sampled_from(GOAL_TYPES) | header_text, max_size=3))
        # Mostly a valid token, so that most requests get past auth into validation.
        headers = {"Authorization": data.draw(st.sampled_from([f"Bearer {token}"] * 8 + ["Bearer x", ""]))}
        if data.draw(st.integers(0, 9)) == 0:
            headers["Authorization"] = data.draw(header_text)
        headers.update(data.draw(st.dictionaries(st.sampled_from(["x-request-id", "Idempotency-Key", "X-Client-Id",
                                                                  "Origin", "Accept"]), header_text, max_size=3)))
        content_type = data.draw(st.sampled_from(["application/json"] * 5 + ["text/plain", "application/x-www-form-urlencoded",
                                                                             "application/json; charset=latin-1"]))
        body = data.draw(goal_bodies | json_values)
        raw = json.dumps(body).encode()
        if data.draw(st.integers(0, 9)) == 0:  # sometimes not JSON at all
            raw = data.draw(st.binary(max_size=200))
        path_id = quote(str(data.draw(ids)), safe="")
        path = {"create": "/goals", "goal": f"/goals/{path_id}", "end_goal": f"/goals/{path_id}/end",
                "session": f"/sessions/{path_id}", "end_session": f"/sessions/{path_id}/end",
                "get_session": f"/sessions/{path_id}", "sessions": "/sessions"}[route]
        method = "GET" if route in ("goal", "get_session") else "POST"
        if query:
            path += "?" + urlencode(query)
        before = support.state(db)
        response = client.open(path, method=method, data=raw, headers=headers, content_type=content_type)
        check(response, db, before, tally)

    run()
    with capsys.disabled():
        print(f"\n[reliability] generated requests: {sum(tally[k] for k in ('refused', 'accepted'))} tried, "
              f"{tally['refused']} refused with nothing written, {tally['accepted']} accepted; "
              f"statuses {dict(sorted((k, v) for k, v in tally.items() if isinstance(k, int)))}")
    assert tally["refused"] > EXAMPLES * 0.8


def corpus(world) -> list[tuple[str, str, bytes | str, str, int]]:
    """(name, query, raw body, content type, status) for POST /goals."""
    now = time.time()

    def body(**changes) -> str:
        base = {"levels": [{"target": 300}], "nbf": round(now, 3),
                "context": {"session_id": world.session, "trigger_exclusive_goal_id": world.trigger}}
        for key, value in changes.items():
            if key.startswith("context_"):
                base["context"][key[8:]] = value
            else:
                base[key] = value
        return json.dumps(base)

    cases = []
    for operator in OPERATORS:
        cases += [
            (f"operator session_id {operator}", "type=exclusive", body(context_session_id=operator), 400),
            (f"operator trigger id {operator}", "type=exclusive", body(context_trigger_exclusive_goal_id=operator), 400),
            (f"operator funding id {operator}", "goal_type=show",
             json.dumps({"levels": [{"target": 1}], "context": {"session_id": world.session, "funding_goal_id": operator}}),
             400),
            (f"operator target {operator}", "type=exclusive", body(levels=[{"target": operator}]), 400),
            (f"operator levels {operator}", "type=exclusive", body(levels=operator), 400),
            (f"operator context {operator}", "type=exclusive", body(context=operator), 400),
            (f"operator nbf {operator}", "type=exclusive", body(nbf=operator), 400),
            (f"operator exclusive_to {operator}", "type=trigger_exclusive",
             json.dumps({"levels": [{"target": 1}], "nbf": now, "exp": now + 60,
                         "context": {"session_id": world.session, "exclusive_to": operator}}), 400),
        ]
    cases += [
        ("wrong type levels", "type=exclusive", body(levels="300"), 400),
        ("wrong type target string", "type=exclusive", body(levels=[{"target": "300"}]), 400),
        ("wrong type target bool", "type=exclusive", body(levels=[{"target": True}]), 400),
        ("wrong type context", "type=exclusive", body(context=["a"]), 400),
        ("wrong type nbf", "type=exclusive", body(nbf="tomorrow"), 400),
        ("huge target", "type=exclusive", body(levels=[{"target": 10**400}]), 400),
        ("huge float target", "type=exclusive", body(levels=[{"target": 1e308}]), 400),
        ("huge nbf", "type=exclusive", body(nbf=10**30), 400),
        ("NaN target", "type=exclusive", body().replace("300", "NaN"), 400),
        ("Infinity target", "type=exclusive", body().replace("300", "Infinity"), 400),
        ("-Infinity nbf", "type=exclusive", body(nbf=1).replace(': 1,', ': -Infinity,'), 400),
        ("negative target", "type=exclusive", body(levels=[{"target": -300}]), 400),
        ("zero target", "type=exclusive", body(levels=[{"target": 0}]), 400),
        ("no levels", "type=exclusive", body(levels=[]), 400),
        ("too many levels", "type=exclusive", body(levels=[{"target": 1}] * 1000), 400),
        ("exp before nbf", "type=trigger_exclusive",
         json.dumps({"levels": [{"target": 1}], "nbf": now + 60, "exp": now + 30,
                     "context": {"session_id": world.session}}), 400),
        ("exp equals nbf", "type=show_funding",
         json.dumps({"levels": [{"target": 1}], "nbf": now + 60, "exp": now + 60,
                     "context": {"session_id": world.session}}), 400),
        ("milliseconds as seconds", "type=exclusive", body(nbf=now * 1000), 400),
        ("unicode id", "type=exclusive", body(context_session_id="６８１８３１ｄ３２９２５４９ａ５ｄ９１ｄｆ２６７"), 400),
        ("unicode exclusive_to", "type=trigger_exclusive",
         json.dumps({"levels": [{"target": 1}], "nbf": now, "exp": now + 60,
                     "context": {"session_id": world.session, "exclusive_to": "直播間"}}), 400),
        ("null byte id", "type=exclusive", body(context_session_id="681831d3292549a5d91df26\x00"), 400),
        ("oversized body", "type=exclusive", body(padding="x" * 70_000), 413),
        ("duplicate keys", "type=exclusive", body()[:-1] + ', "nbf": 1}', 400),
        ("duplicate nested keys", "type=exclusive",
         '{"levels": [{"target": 1, "target": 2}], "context": {"session_id": "' + world.session + '"}}', 400),
        ("malformed json", "type=exclusive", body()[:-5], 400),
        ("array body", "type=exclusive", "[]", 400),
        ("string body", "type=exclusive", '"hello"', 400),
        ("empty body", "type=exclusive", "", 400),
        ("deep nesting", "type=exclusive", "[" * 5000 + "]" * 5000, 400),
        ("not utf-8", "type=exclusive", b"\xff\xfe{}", 400),
        ("unknown type", "type=admin", body(), 400),
        ("operator type", "type[$ne]=x", body(), 400),
        ("both types differ", "type=exclusive&goal_type=show", body(), 400),
        ("unknown session", "type=exclusive", body(context_session_id="0" * 24), 404),
        ("unknown trigger", "type=exclusive", body(context_trigger_exclusive_goal_id="0" * 24), 404),
        ("trigger is a funding goal", "type=exclusive", body(context_trigger_exclusive_goal_id=world.funding), 422),
    ]
    cases = [(name, query, raw, "application/json", status) for name, query, raw, status in cases]
    cases += [
        ("text/plain", "type=exclusive", body(), "text/plain", 415),
        ("form", "type=exclusive", "levels=300", "application/x-www-form-urlencoded", 415),
        ("no content type", "type=exclusive", body(), "", 415),
    ]
    return cases


def test_a_fixed_corpus_of_attacks_is_refused_and_writes_nothing(api, db, capsys):
    client, world, token = api
    before = support.state(db)
    statuses: Counter = Counter()
    cases = corpus(world)
    for name, query, raw, content_type, status in cases:
        headers = {"Authorization": f"Bearer {token}", "x-request-id": f"corpus-{name}"[:200]}
        for path in ("/goals", "/goal"):
            response = client.post(f"{path}?{query}", data=raw, headers=headers, content_type=content_type or None)
            assert response.status_code == status, (name, response.status_code, response.get_json())
            support.error_model(response)
            statuses[status] += 1
    # Every id-taking route with an operator, unicode or garbage id.
    for bad in ['{"$ne": null}', "$ne", "６８１８３１ｄ３２９２５４９ａ５ｄ９１ｄｆ２６７", "../../etc", "0" * 25, "%00"]:
        for method, path in (("GET", "/goals/{}"), ("POST", "/goals/{}/end"), ("GET", "/sessions/{}"),
                             ("POST", "/sessions/{}/end")):
            response = client.open(path.format(quote(bad, safe="")), method=method,
                                   headers={"Authorization": f"Bearer {token}"})
            assert response.status_code in (400, 404), (path, bad, response.status_code)
            support.error_model(response)
            statuses[response.status_code] += 1
    assert support.state(db) == before
    with capsys.disabled():
        print(f"\n[reliability] fixed corpus: {sum(statuses.values())} requests ({len(cases)} bodies x 2 routes"
              f" + ids), statuses {dict(statuses)}, nothing written")
