"""The import contract (``.importlinter``): a plugin imports ``goalhub`` and no ``goalhub.*`` submodule
(goalhub's own layers: ``tests/test_layers.py``).

``make test`` runs ``lint-imports`` too; these tests keep the contract in plain ``pytest`` and
show that it catches what it is meant to catch. The bundled plugins' tests are held to it as
well (checked with ``ast``: import-linter only sees packages): they may import ``goalhub``,
``goalhub.testing``, their own plugin, ``goalhub_demo`` and third-party libraries.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import goalhub

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
    assert "2 kept, 0 broken" in result.stdout  # the plugins contract and the layers contract


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
    config.remove_section("importlinter:contract:layers")  # goalhub's own (tests/test_layers.py)
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


# --- the bundled plugins' tests --------------------------------------------------------------

PLUGIN_TEST_GLOBS = ("goalhub_*/tests/**/*.py", "plugins/*/tests/**/*.py", "examples/*/tests/**/*.py")
#: What a plugin's tests may reach in goalhub: the public package and its pytest plugin.
ALLOWED_MODULES = {"goalhub", "goalhub.testing"}
ALLOWED_NAMES = {*goalhub.__all__, "testing", "__version__", "__hook_api_version__"}


def internal_imports(source: str) -> list[str]:
    """Every use of a goalhub internal in ``source``: an import of a ``goalhub.*`` module other
    than ``goalhub.testing``, ``from goalhub import`` of a name not in ``goalhub.__all__`` (a
    submodule such as ``tasks``), and ``goalhub.<name>`` for such a name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {alias.name}" for alias in node.names
                      if alias.name.split(".")[0] == "goalhub" and alias.name not in ALLOWED_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "goalhub":
                found += [f"line {node.lineno}: from goalhub import {alias.name}" for alias in node.names
                          if alias.name not in ALLOWED_NAMES]
            elif node.module.split(".")[0] == "goalhub" and node.module not in ALLOWED_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "goalhub" and node.attr not in ALLOWED_NAMES):
            found.append(f"line {node.lineno}: goalhub.{node.attr}")
    return found


def plugin_test_violations(root: Path) -> dict[str, list[str]]:
    """The goalhub internals each plugin test module under ``root`` uses, by file."""
    files = sorted({path for pattern in PLUGIN_TEST_GLOBS for path in root.glob(pattern)})
    return {str(path.relative_to(root)): found for path in files if (found := internal_imports(path.read_text()))}


def test_bundled_plugins_tests_use_only_the_public_package_and_goalhub_testing() -> None:
    found = {path for pattern in PLUGIN_TEST_GLOBS for path in ROOT.glob(pattern) if path.name.startswith("test_")}
    assert len(found) >= 9, found  # the globs do reach every bundled plugin's tests
    violations = plugin_test_violations(ROOT)
    assert not violations, f"plugin tests importing goalhub internals (use goalhub or goalhub.testing): {violations}"


VIOLATIONS = [
    "from goalhub import tasks",
    "from goalhub import errors, get_database",
    "from goalhub.binding import BindingConflict",
    "from goalhub.testing.internal import thing",
    "import goalhub.queues",
    "import goalhub.connection as connection",
    "goalhub.tasks.create_goal({})",
    "def test_inside():\n    from goalhub.outbound import records",
]


def test_the_plugin_tests_check_fails_on_each_kind_of_internal_import(tmp_path: Path) -> None:
    """The same check over a made-up tree: each violation is reported, once, in its file."""
    for index, line in enumerate(VIOLATIONS):
        test_file = tmp_path / "plugins" / f"violator{index}" / "tests" / "test_violator.py"
        test_file.parent.mkdir(parents=True)
        test_file.write_text(f"import goalhub\n{line}\n")
    (tmp_path / "goalhub_nested" / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "goalhub_nested" / "tests" / "unit" / "test_deep.py").write_text("from goalhub.tasks import end_goal\n")

    violations = plugin_test_violations(tmp_path)

    assert sorted(violations) == sorted(
        [f"plugins/violator{index}/tests/test_violator.py" for index in range(len(VIOLATIONS))]
        + ["goalhub_nested/tests/unit/test_deep.py"])
    assert all(len(found) == 1 for found in violations.values()), violations
    assert violations["plugins/violator0/tests/test_violator.py"] == ["line 2: from goalhub import tasks"]
    assert violations["plugins/violator1/tests/test_violator.py"] == ["line 2: from goalhub import errors"]


def test_the_plugin_tests_check_accepts_the_public_api(tmp_path: Path) -> None:
    test_file = tmp_path / "plugins" / "fine" / "tests" / "test_fine.py"
    test_file.parent.mkdir(parents=True)
    test_file.write_text(textwrap.dedent("""
        import goalhub
        import goalhub.testing
        from goalhub import BadRequest, CreateRequest, get_redis, outbound_records, testing
        from goalhub.testing import create_goal, documents
        from goalhub_demo.world import goal_document
        from goalhub_snapshot import receivers
        from rq.job import Job

        goalhub.send_event("goal.created")
        goalhub.testing.queue()
        goalhub.__version__
    """))
    assert plugin_test_violations(tmp_path) == {}
