"""``goalhub outbound`` names no plugin's service (the core names no plugin): ``--kinds`` lists
the kinds the installed plugins actually recorded (issue 22)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from goalhub import send_once
from goalhub.cli import main

BUNDLED_SERVICES = ("pusher", "rtc", "notification", "analytics")


def test_the_help_names_no_plugins_service():
    help_text = CliRunner().invoke(main, ["outbound", "--help"]).output.lower()
    assert not [name for name in BUNDLED_SERVICES if name in help_text], help_text


def test_kinds_lists_what_was_recorded(db):
    runner = CliRunner()
    assert runner.invoke(main, ["outbound", "--kinds"]).output.strip() == "No outbound calls."
    send_once("carrier-pigeon", "k1", {"n": 1}, None)
    send_once("smoke-signal", "k2", {"n": 2}, None)
    send_once("carrier-pigeon", "k3", {"n": 3}, None)
    listed = runner.invoke(main, ["outbound", "--kinds", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == ["carrier-pigeon", "smoke-signal"]
