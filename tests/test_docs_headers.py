"""``/docs`` keeps the bearer token in localStorage, so it is sent with a Content-Security-Policy,
no framing and nosniff, and still works in a real browser under it; ``/openapi.json`` is built
once per process, not on every unauthenticated request (issue 22, row 7)."""

from __future__ import annotations

import re
import shutil
import subprocess

import api_support
import pytest

from goalhub.api import create_app, openapi

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def client():
    return create_app().test_client()


def test_docs_pages_carry_csp_frame_and_nosniff_headers_and_a_nonce_on_the_inline_script(client):
    page = client.get("/docs/")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)[1]
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy.split("script-src", 1)[1].split(";")[0]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert f'<script nonce="{nonce}">' in page.get_data(as_text=True)
    asset = client.get("/docs/swagger-ui-bundle.js")
    assert asset.headers["X-Content-Type-Options"] == "nosniff" and "Content-Security-Policy" in asset.headers


def test_the_openapi_document_is_built_once_per_process(client, monkeypatch):
    built = []
    real = openapi.document
    monkeypatch.setattr(openapi, "document", lambda *args: built.append(1) or real(*args))
    monkeypatch.setattr("goalhub.api.docs._built", None)
    first, second = client.get("/openapi.json"), client.get("/openapi.json")
    assert first.status_code == second.status_code == 200 and first.data == second.data
    assert first.get_json()["openapi"].startswith("3.1")
    assert len(built) == 1


@pytest.mark.e2e
def test_swagger_ui_renders_under_its_csp_in_a_real_browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/ensure-chromium.sh installs Debian's chromium)")
    server, base = api_support.start_api(api_support.process_env(), tmp_path, workers=1, threads=4)
    try:
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                              "--dump-dom", f"{base}/docs/"], capture_output=True, text=True, timeout=90).stdout
    finally:
        server.stop()
    assert 'class="opblock-tag' in dom, dom[-2000:]  # the operations, rendered by Swagger UI's scripts
