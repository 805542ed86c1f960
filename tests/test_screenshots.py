"""The dashboard in a real browser: scripts/screenshots.py drives a real stack and takes
screenshots with Debian's headless chromium (installed by the script when missing, as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ("home.png", "overview.png", "scheduled.png", "goal.png", "failed-job.png", "rq-redirect.png")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_screenshots_of_home_scheduled_view_and_a_failed_job(tmp_path):
    if not shutil.which("chromium") and os.geteuid() != 0:
        pytest.skip("no chromium, and not root to install it (make chromium)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOALHUB_", "PROMETHEUS_"))}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshots.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in SHOTS:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    # Distinct pages, not copies of one error page; /rq (no slash) is the queues page, not a
    # blank password prompt (a blank page is a few KB).
    pages = SHOTS[:-1]
    assert len({(tmp_path / name).read_bytes() for name in pages}) == len(pages)
