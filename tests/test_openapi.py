"""The API contract: an OpenAPI 3.1 document from pydantic models and the plugins' goal types,
Swagger UI from a package, and schemathesis against the live server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import api_support
import pytest
import requests

import goalhub
from goalhub.api import create_app
from goalhub.api.openapi import undocumented_routes
from goalhub.auth import mint_token
from goalhub.goaltypes import GoalType

PLUGINS = ("exclusive", "show", "karaoke", "snapshot", "analytics", "livestream")
BUNDLED_TYPES = {"exclusive", "trigger_exclusive", "show", "show_funding", "karaoke", "trigger_private"}


def test_every_route_is_documented_and_the_document_is_valid_openapi_3_1(use_plugins):
    use_plugins(*PLUGINS)
    app = create_app()
    assert undocumented_routes(app) == []
    document = app.test_client().get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    create = document["paths"]["/goals"]["post"]
    type_parameter = next(p for p in create["parameters"] if p["name"] == "type")
    assert set(type_parameter["schema"]["enum"]) == BUNDLED_TYPES
    schemas = document["components"]["schemas"]
    # Each bundled goal type's body schema comes from its plugin.
    assert schemas["GoalBody_exclusive"]["properties"]["context"]["required"] == ["session_id", "trigger_exclusive_goal_id"]
    assert "exp" in schemas["GoalBody_trigger_private"]["required"]
    assert schemas["GoalBody_show"]["properties"]["context"]["required"] == ["session_id", "funding_goal_id"]


class _Welcome:
    @goalhub.hookimpl
    def goal_types(self):
        schema = {"type": "object", "required": ["greeting"], "properties": {"greeting": {"type": "string"}}}
        return [GoalType("welcome", "WelcomeGoal", lambda request: None, "a greeting", body_schema=schema)]


def test_a_goal_type_appears_in_the_document_when_its_plugin_is_installed(inline_plugin):
    client = create_app().test_client()
    assert "GoalBody_welcome" not in client.get("/openapi.json").get_json()["components"]["schemas"]
    inline_plugin(_Welcome(), name="welcome")
    document = client.get("/openapi.json").get_json()
    assert document["components"]["schemas"]["GoalBody_welcome"]["required"] == ["greeting"]
    assert {"$ref": "#/components/schemas/GoalBody_welcome"} in \
        document["paths"]["/goals"]["post"]["requestBody"]["content"]["application/json"]["schema"]["anyOf"]


def test_docs_page_is_served_from_the_package_not_a_cdn():
    client = create_app().test_client()
    page = client.get("/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html and "https://" not in html.replace("https://swagger.io", "")
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 200


@pytest.mark.e2e
@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_every_response_matches_the_document(tmp_path, use_plugins):
    use_plugins(*PLUGINS)
    env = api_support.process_env()
    server, base = api_support.start_api(env, tmp_path, workers=2, threads=4)
    token = mint_token("6800a9073e0c346531958b03", ["CREATOR", "ADMIN"])
    # A live session of the caller, so that valid bodies can reach the goal types' own rules.
    requests.post(f"{base}/sessions", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    "response_schema_conformance,response_headers_conformance",
        "--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--seed", "20261201",
        "--generation-database", "none", "--workers", "1", "--request-timeout", "10",
        "--header", f"Authorization: Bearer {token}", "--no-color",
        # With no worker or scheduler in this test, /healthz/deep's documented 503 is its very
        # purpose; its answers are checked against the document in tests/test_ops_health.py.
        "--exclude-path", "/healthz/deep",
    ]
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                                env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:] + server.output()
    assert "No issues found" in result.stdout or "passed" in result.stdout, result.stdout[-3000:]
    print(f"schemathesis took {elapsed:.0f} s")  # its speed is not asserted here (benchmarks/ measure speed)
    print(result.stdout[-1500:])
