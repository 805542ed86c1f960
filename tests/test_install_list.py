"""`make install` and tox install the same things, from one list (requirements-dev.txt): it
names every distribution in the tree that the suite needs installed, both use it and nothing
else, and the interpreter running the suite has all of it installed."""

from __future__ import annotations

import configparser
import re
from importlib import metadata
from pathlib import Path

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
