"""Each setting is described once, in its ``goalhub.config.Settings`` field: the README's
configuration table and ``goalhub config --help`` are made from the fields, and the code reads
settings only through the model."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from click.testing import CliRunner

from goalhub import config
from goalhub.cli import main

ROOT = Path(__file__).resolve().parent.parent


def readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- settings:"):text.index("<!-- /settings -->")]
    return block[block.index("| variable |"):]


def test_the_readme_table_is_the_one_made_from_the_settings_model() -> None:
    assert readme_table() == config.markdown_table(), (
        "README.md's settings table differs from goalhub.config.Settings; regenerate it (see the comment above it)")


def test_every_field_has_a_description_and_what_is_allowed() -> None:
    for row in config.reference():
        assert row["meaning"] and row["allowed"], row


def test_goalhub_config_help_lists_every_setting_with_its_description() -> None:
    result = CliRunner().invoke(main, ["config", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for row in config.reference():
        assert f"{row['variable']} [default: {row['default'] or '(empty)'}]" in text, row["variable"]
        assert " ".join(row["meaning"].replace("`", "").split()) in text, row["variable"]


def test_a_changed_description_changes_the_table(monkeypatch) -> None:
    """The table is made from the fields, not kept beside them."""
    field = config.Settings.fields["JOB_TIMEOUT"]
    monkeypatch.setattr(field, "description", "something else entirely")
    assert "| `GOALHUB_JOB_TIMEOUT` | `60` | something else entirely |" in config.markdown_table()
    assert readme_table() != config.markdown_table()


def test_the_code_reads_goalhub_settings_only_through_the_model() -> None:
    """No ``os.environ``/``os.getenv``/``config.env`` read of a ``GOALHUB_*`` core variable outside
    goalhub/config.py (goalhub.testing's test-only variables aside)."""
    fields = {config.PREFIX + name for name in config.Settings.fields}
    found = []
    for path in sorted((ROOT / "goalhub").rglob("*.py")):
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in fields:
                parent_reads = re.search(rf"(environ(\.get)?\(|\[)\s*['\"]{node.value}['\"]|getenv\(\s*['\"]{node.value}",
                                         path.read_text())
                if parent_reads:
                    found.append(f"{path.relative_to(ROOT)}: {node.value}")
    assert found == []
