"""Screenshots of goalhub's dashboard in a real browser (Debian's chromium, headless).

    .venv/bin/python scripts/screenshots.py [OUT_DIR]      # or: make screenshots

Starts a real stack in a fresh home (the waitress API, a forking RQ worker, the scheduler, the
embedded Redis and store, the bundled plugins plus ``screenshot_plugin``, whose receiver
always fails), drives it over HTTP (a live session, countdowns with activations and ends a
few minutes ahead, a karaoke goal whose failing receiver leaves a failed job), and takes:

- ``home.png``       rq-dashboard's home (/rq/), with goalhub's tabs in its navbar
- ``overview.png``   goalhub's operations page: scheduler liveness, lock holder, counts
- ``scheduled.png``  the scheduled activations and ends (goal, class, due time, Cancel)
- ``goal.png``       a goal's receiver outcomes, each linked to its RQ job
- ``failed-job.png`` rq-dashboard's page of the failed receiver job (its traceback)
- ``rq-redirect.png`` ``/rq`` typed without its slash: the queues page, credentials kept

Chromium is found on PATH; when it is missing and this runs as root, it is installed with
apt-get (``make chromium``). Exits 2 when no browser can be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
USER, PASSWORD = "ops", "screenshots-password"


def chromium() -> str | None:
    """Debian's chromium, installed by the project's one installer when missing (as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    subprocess.run(["sh", str(HERE / "ensure-chromium.sh")], check=False, timeout=900,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("chromium") or shutil.which("chromium-browser")


def shoot(browser: str, url: str, path: Path, profile: Path) -> None:
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={profile}", "--window-size=1280,900", "--virtual-time-budget=4000",
         f"--screenshot={path}", url],
        check=True, timeout=90, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if not path.exists() or path.stat().st_size < 1000:
        raise RuntimeError(f"no screenshot of {url}")


def main(out_dir: str = "screenshots") -> int:
    browser = chromium()
    if browser is None:
        print("no chromium on PATH (install Debian's: apt-get install chromium, or make chromium)", file=sys.stderr)
        return 2
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="goalhub-shots-"))
    env = {**os.environ, "GOALHUB_HOME": str(work / "home"), "GOALHUB_DASHBOARD_USER": USER,
           "GOALHUB_DASHBOARD_PASSWORD": PASSWORD, "GOALHUB_RECEIVER_RETRIES": "0",
           "GOALHUB_PLUGINS": "screenshot_plugin", "GOALHUB_LOG_FORMAT": "json",
           "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name in ("GOALHUB_REDIS_URL", "GOALHUB_MONGO_URI", "GOALHUB_LOAD_PLUGINS"):
        env.pop(name, None)
    os.environ.update({k: v for k, v in env.items() if k.startswith("GOALHUB_")})
    from goalhub import connection
    from goalhub.auth import mint_token
    from goalhub.testing import ChildProcess, start_api

    connection.ensure_embedded_redis()
    env["GOALHUB_REDIS_URL"] = os.environ["GOALHUB_REDIS_URL"] = connection.redis_url()
    processes = [ChildProcess("worker", "from goalhub.cli import main; main(['worker'])", env, work),
                 ChildProcess("scheduler", "from goalhub.cli import main; main(['scheduler'])", env, work)]
    try:
        server, base = start_api(env, work)
        processes.append(server)
        auth = {"Authorization": f"Bearer {mint_token('6800a9073e0c346531958b03', ['CREATOR', 'PLATFORM'])}"}
        session = requests.post(f"{base}/sessions", json={"sources": [{"room_id": "room-1", "task_id": "task-1"}]},
                                headers=auth, timeout=10).json()["_id"]
        now = time.time()
        for kind, nbf, exp in (("trigger_private", 300, 1800), ("trigger_exclusive", 600, 900),
                               ("show_funding", 120, 3600)):
            answer = requests.post(f"{base}/goals?type={kind}", headers=auth, timeout=10, json={
                "levels": [{"target": 100}], "context": {"session_id": session}, "nbf": now + nbf, "exp": now + exp})
            answer.raise_for_status()
        karaoke = requests.post(f"{base}/goals?type=karaoke", headers=auth, timeout=10,
                                json={"levels": [{"target": 30}], "context": {"session_id": session}}).json()["goal_id"]
        failed_job = None
        for _ in range(150):
            goal = requests.get(f"{base}/goals/{karaoke}", headers=auth, timeout=10).json()
            failed = [o for o in goal.get("outcomes", []) if o["status"] == "failed"]
            if failed:
                from goalhub.queues import job_id

                failed_job = job_id("receiver", failed[0]["_id"])
                break
            time.sleep(0.1)
        if failed_job is None:
            raise RuntimeError("the failing receiver did not fail")
        time.sleep(1.5)  # the scheduler's heartbeat and lock holder show
        host = base.replace("http://", f"http://{USER}:{PASSWORD}@")
        pages = {"home.png": "/rq/", "overview.png": "/rq/goalhub/", "scheduled.png": "/rq/goalhub/scheduled",
                 "goal.png": f"/rq/goalhub/goals/{karaoke}", "failed-job.png": f"/rq/0/view/job/{failed_job}",
                 "rq-redirect.png": "/rq"}
        for name, path in pages.items():
            shoot(browser, host + path, out / name, work / "profile")
            print(f"{out / name}: {path}")
    finally:
        for process in processes:
            process.stop()
        connection.stop_embedded_redis()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
