"""Issue 24 item 6: what ``deploy/`` ships for monitoring is checked.

- ``deploy/prometheus/goalhub.rules.yml`` passes ``promtool check rules`` and its unit tests
  (``promtool test rules``); every expression of the Grafana dashboard is checked the same way.
- Every metric name the rules and the dashboard use is a family goalhub exports, and every
  family a real ``/metrics`` scrape shows is in README's table.

promtool comes from Debian's ``prometheus`` package (``make promtool`` installs it where it
can); without it the promtool checks skip, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import api_support
import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "goalhub.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "goalhub.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "goalhub.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus "
                                    "package; `make promtool` installs it as root)")
FAMILY = re.compile(r"\bgoalhub_[a-z_]+")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL or "promtool", *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent)


@needs_promtool
def test_the_rules_pass_promtool_check_and_their_unit_tests():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_every_dashboard_expression_is_valid_promql(tmp_path):
    exprs = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    assert len(exprs) > 10
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:check_{n}", "expr": expr}
                                                        for n, expr in enumerate(exprs)]}]}
    (tmp_path / "dashboard.rules.yml").write_text(json.dumps(rules))  # JSON is YAML
    checked = subprocess.run([PROMTOOL or "promtool", "check", "rules", str(tmp_path / "dashboard.rules.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


FAMILIES = """
from goalhub import metrics
from goalhub.api import create_app
from goalhub.auth import mint_token

metrics.goal_created("ExampleGoal")
metrics.receiver_outcome("plugin", "receiver", "ok", 0.01)
metrics.activation(0.1)
metrics.reconciled("activate")
metrics.http_request("GET", "/goals/<goal_id>", 200, 0.01)
metrics.store_writes("worker", 1, 0.001, 0.002)
token = mint_token("6800a9073e0c346531958b03", ["ADMIN"])
print(create_app().test_client().get("/metrics", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True))
"""


def exported_families() -> set[str]:
    """The families of a real scrape, after one sample of every recorded metric: in a process
    of its own, since prometheus-client picks its multiprocess mode at its first import."""
    done = subprocess.run([sys.executable, "-c", FAMILIES], env=api_support.process_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {line.split()[2] for line in done.stdout.splitlines() if line.startswith("# TYPE goalhub_")}


def test_every_family_is_documented_and_every_name_used_is_exported():
    families = exported_families()
    assert {"goalhub_workers", "goalhub_schedulers", "goalhub_build_info", "goalhub_receiver_tripped",
            "goalhub_process_resident_memory_bytes"} <= families
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| metric | labels | what |"):]
    table = table[:table.index("\n\n")]
    documented = set(FAMILY.findall(table))
    suffixed = {"counter": "_total", "info": "_info"}
    undocumented = {f for f in families if f not in documented and not any(f + s in documented for s in suffixed.values())}
    assert undocumented == set()
    names = set(FAMILY.findall(RULES.read_text())) | set(FAMILY.findall(DASHBOARD.read_text()))
    known = set()
    for family in families:
        known |= {family, *(family + suffix for suffix in ("_total", "_bucket", "_sum", "_count", "_info"))}
    assert names - known == set()
