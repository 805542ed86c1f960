"""``/readyz`` answers anyone: it names a broken plugin, never the
reason, which may carry a URL's password and key; wherever the reason is shown it is
redacted (issue 22, row 6)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import api_support

LEAKY = "raise RuntimeError('cannot reach billing at https://svc:Pa55word@billing.example/x?api_key=k123')\n"


def test_readyz_names_a_broken_plugin_without_its_reason_and_the_cli_shows_it_redacted(tmp_path):
    (tmp_path / "leaky_plugin.py").write_text(LEAKY)
    env = api_support.process_env(GOALHUB_PLUGINS="leaky_plugin", GOALHUB_LOAD_PLUGINS="",
                                  PYTHONPATH=f"{tmp_path}:{api_support.TESTS_DIR}:{api_support.ROOT}")
    probe = textwrap.dedent("""
        import json
        from goalhub.api import create_app
        response = create_app().test_client().get("/readyz")
        print(json.dumps(response.get_json()))
        """)
    ready = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert ready.returncode == 0, ready.stderr
    body = json.loads(ready.stdout.strip().splitlines()[-1])
    assert body["status"] == "degraded" and body["plugins"] == ["leaky_plugin"]
    cli = subprocess.run([sys.executable, "-m", "goalhub", "plugins", "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    shown = ready.stderr + cli.stdout + cli.stderr
    assert "leaky_plugin" in cli.stdout and "RuntimeError" in cli.stdout
    assert "Pa55word" not in shown and "k123" not in shown, shown
