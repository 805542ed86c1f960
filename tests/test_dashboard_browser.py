"""Issue 12, row 2, in a real browser: Debian's chromium, headless, opens the RQ dashboard of a
real API server under its Content-Security-Policy. The dashboard's own scripts still run (job
data is rendered into the page), and a job description carrying markup is shown as text, its
event handler never run. ``make test`` installs chromium when it can (``scripts/ensure-chromium.sh``);
without it these tests skip, saying so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import api_support
import pytest

from goalhub.queues import get_queue, queue_names

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"


@pytest.fixture
def dashboard(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/ensure-chromium.sh installs Debian's chromium)")
    env = api_support.process_env(GOALHUB_DASHBOARD_USER="ops", GOALHUB_DASHBOARD_PASSWORD="dashboard-pw")
    server, base = api_support.start_api(env, tmp_path, workers=1, threads=4)
    try:
        yield base.replace("http://", "http://ops:dashboard-pw@")
    finally:
        server.stop()


def browse(url: str, tmp_path: Path, screenshot: str | None = None) -> tuple[str, str]:
    """The DOM after the page's scripts ran (5 s of virtual time), and the browser's console log."""
    profile = tmp_path / "chromium-profile"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--window-size=1280,900"]
    dom = subprocess.run([*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
                         capture_output=True, text=True, timeout=90)
    if screenshot:
        ARTIFACTS.mkdir(exist_ok=True)
        subprocess.run([*common, f"--screenshot={ARTIFACTS / screenshot}", url],
                       capture_output=True, timeout=90)
    return dom.stdout, dom.stderr


def test_the_dashboard_works_under_its_csp_and_shows_markup_as_text(dashboard, tmp_path):
    payload = '<img src=x onerror="document.title=\'pwned\'">'
    job = get_queue().enqueue(time.sleep, 0, description=payload)

    dom, console = browse(f"{dashboard}/rq/0/view/job/{job.id}", tmp_path, screenshot="dashboard-job.png")
    # Rendered by the dashboard's own script (its template holds "<%= d.description %>"):
    # the script ran under the CSP, and the markup arrived as text.
    assert '<div class="description-scroll">&lt;img src=x onerror="document.title=\'pwned\'"&gt;</div>' in dom, dom
    assert "<title>RQ dashboard</title>" in dom and "pwned</title>" not in dom
    assert not re.search(r"<img[^>]*onerror", dom)
    assert "Content Security Policy" not in console, console  # nothing of the dashboard's own was refused

    queues, console = browse(f"{dashboard}/rq/", tmp_path, screenshot="dashboard-queues.png")
    for name in queue_names():
        assert f"/view/jobs/{name}/" in queues, queues  # rows rendered from queues.json
    assert "Content Security Policy" not in console, console
