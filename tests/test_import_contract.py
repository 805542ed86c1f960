"""The import contract (``.importlinter``): a plugin imports ``goalhub`` and no ``goalhub.*`` submodule.

``make test`` runs ``lint-imports`` too; these tests keep the contract in plain ``pytest`` and
show that it catches what it is meant to catch.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACT = "importlinter:contract:plugins-use-the-public-api"


def lint_imports(config: Path, cwd: Path, *python_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, python_path))}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def test_bundled_plugins_import_only_the_public_package() -> None:
    result = lint_imports(ROOT / ".importlinter", ROOT, ROOT / "examples" / "goalhub-welcome")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_every_bundled_plugin_is_under_the_contract() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    sources = set(config[CONTRACT]["source_modules"].split())
    plugin_dirs = [*ROOT.glob("goalhub_*/goalhub_*/__init__.py"), *ROOT.glob("plugins/*/goalhub_*/__init__.py"),
                   *ROOT.glob("examples/*/goalhub_*/__init__.py")]
    # A plugin is a distribution with a ``goalhub`` entry point; examples/demo (the operator's
    # demo and the seed world of the tests) is an application of goalhub, not a plugin.
    packages = {init.parent.name for init in plugin_dirs
                if re.search(r"^goalhub\s*=", (init.parent.parent / "setup.cfg").read_text(), re.M)}
    assert packages and packages <= sources, f"not under the import contract: {sorted(packages - sources)}"


def test_the_contract_fails_on_a_plugin_importing_a_core_module(tmp_path: Path) -> None:
    """The same contract, pointed at a made-up plugin: every way of reaching a submodule is a
    violation, and importing public names from ``goalhub`` is not."""
    package = tmp_path / "goalhub_violator"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        import goalhub
        from goalhub import get_database, send_once
    """))
    (package / "direct.py").write_text("from goalhub.store import get_database\n")
    (package / "submodule.py").write_text("from goalhub import outbound\n")
    (package / "plain.py").write_text("import goalhub.queues\n")
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    config["importlinter"]["root_packages"] = "\ngoalhub\ngoalhub_violator"
    config[CONTRACT]["source_modules"] = "\ngoalhub_violator"
    with open(tmp_path / ".importlinter", "w") as out:
        config.write(out)

    result = lint_imports(tmp_path / ".importlinter", tmp_path, tmp_path, ROOT)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    for violation in ("goalhub_violator.direct -> goalhub.store", "goalhub_violator.submodule -> goalhub.outbound",
                      "goalhub_violator.plain -> goalhub.queues"):
        assert violation in result.stdout, result.stdout
    assert "goalhub_violator ->" not in result.stdout.replace("goalhub_violator.", "")
