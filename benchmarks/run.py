"""Run every benchmark, print one combined table, and write it to benchmarks/RESULTS.md.

    python benchmarks/run.py [--quick]

(``make bench`` runs it.) Each benchmark runs in its own process against its own temporary
GOALHUB_HOME, embedded Redis and embedded store; its progress goes to stderr, its tables are
collected here. The headline table comes first, then each benchmark's own tables. Nothing here
asserts a time: the figures are for reading, next to their baselines from the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import support  # noqa: E402

# (script, takes --json): bench_store.py prints its own tables only.
BENCHMARKS = [
    ("bench_dispatch.py", True),
    ("bench_e2e.py", True),
    ("bench_receivers.py", True),
    ("bench_tracing.py", True),
    ("bench_activation.py", True),
    ("bench_http.py", True),
    ("bench_store.py", False),
    ("bench_backfill.py", True),
    ("bench_redaction.py", True),
]


def run_one(script: str, with_json: bool, quick: bool, scratch: Path) -> tuple[str, list[dict], float, int]:
    """(its stdout, its headlines, seconds, exit code)."""
    json_path = scratch / f"{script}.json"
    command = [sys.executable, str(BENCH_DIR / script)]
    if quick:
        command.append("--quick")
    if with_json:
        command += ["--json", str(json_path)]
    print(f"running {script}{' --quick' if quick else ''} ...", file=sys.stderr, flush=True)
    began = time.monotonic()
    # stderr is not captured: the benchmark's progress shows as it runs.
    finished = subprocess.run(command, cwd=BENCH_DIR.parent, stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - began
    headlines = json.loads(json_path.read_text()) if with_json and json_path.exists() else []
    print(f"  {script}: {seconds:.0f}s, exit {finished.returncode}", file=sys.stderr, flush=True)
    return finished.stdout, headlines, seconds, finished.returncode


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR.parent, capture_output=True,
                              text=True, check=True).stdout.strip()
        # RESULTS.md itself (the previous run's figures, not yet committed) is not a change to
        # what is measured.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/RESULTS.md"], cwd=BENCH_DIR.parent,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (about 5 minutes)")
    parser.add_argument("--only", action="append", help="run only this script (repeatable), e.g. bench_http.py")
    options = parser.parse_args()

    began = time.monotonic()
    started = dt.datetime.now().astimezone()
    load_before = os.getloadavg()
    sections, headlines, failures, timings = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="goalhub-bench-run-") as scratch:
        for script, with_json in BENCHMARKS:
            if options.only and script not in options.only:
                continue
            output, found, seconds, code = run_one(script, with_json, options.quick, Path(scratch))
            timings.append(f"{script} {seconds:.0f}s")
            headlines += found
            if code != 0:
                failures.append(f"{script} exited with {code}")
                output += f"\n**{script} failed (exit {code}); its error is on stderr of the run.**\n"
            if not with_json:  # plain-text tables: keep their alignment in Markdown
                output = f"## {script}\n\n```\n{output.strip()}\n```\n"
            sections.append(output.strip() + "\n")
    total = time.monotonic() - began

    lines = [
        "# goalhub benchmarks",
        "",
        f"- date: {started:%Y-%m-%d %H:%M %Z}",
        f"- machine: {support.machine()}",
        f"- goalhub commit: {commit()}",
        # Other processes on the machine move the figures; the load average says how busy it was.
        f"- load average (1 min) before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}",
        f"- mode: {'quick (`python benchmarks/run.py --quick`)' if options.quick else 'full (`make bench`)'}; "
        f"took {total / 60:.1f} min ({', '.join(timings)})",
        "- every figure is measured next to its baseline in the same run, on this machine; medians over "
        "repeated runs with [min - max] in the sections below",
        "",
    ]
    if failures:
        lines += [f"**FAILED: {'; '.join(failures)}**", ""]
    lines.append(support.table(["benchmark", "measure", "goalhub", "baseline", "ratio / verdict"],
                               [[h["benchmark"], h["measure"], h["goalhub"], h["baseline"], h["ratio"]] for h in headlines],
                               title="Headline figures"))
    lines.append("Store: see the store section (bench_store.py): embedded SQLite store vs mongomock and montydb.\n")
    report = "\n".join(lines) + "\n" + "\n".join(sections)
    print(report)
    if not options.only:
        (BENCH_DIR / "RESULTS.md").write_text(report)
        print(f"(written to {BENCH_DIR / 'RESULTS.md'})", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
