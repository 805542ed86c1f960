"""Write constraints.txt afresh: the newest versions within setup.cfg's ranges (``make constraints``).

Installs requirements-dev.txt without its ``-c constraints.txt`` line, and the ``otel`` extra,
into a throw-away venv (through uv when the project's venv has it, else pip), and writes what
they resolved to, keeping the file's header. Then run ``make test`` on them and commit both:
the suite is what says the new set works. Needs the package registry.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
NOT_PINNED = {"pip", "uv"}  # the installers themselves


def main() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    otel = [line.strip() for line in setup["options.extras_require"]["otel"].splitlines() if line.strip()]
    requirements = [line for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
                    if not line.startswith("-c ")]
    uv = Path(sys.executable).with_name("uv")
    with tempfile.TemporaryDirectory() as scratch:
        venv = Path(scratch) / "venv"
        listed = Path(scratch) / "requirements.txt"
        listed.write_text("\n".join(requirements) + "\n")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        if uv.exists():
            install = [str(uv), "pip", "install", "--quiet", "--python", python]
        else:
            install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*install, "-r", str(listed)], check=True, cwd=ROOT)
        subprocess.run([*install, "--target", str(Path(scratch) / "otel"), *otel], check=True, cwd=ROOT)
        code = ("import json, sys; from importlib import metadata; "
                "print(json.dumps({d.metadata['Name']: d.version "
                "for d in metadata.distributions(**({'path': sys.argv[1:]} if sys.argv[1:] else {}))}))")
        pins: dict[str, str] = {}
        for path in ([], [str(Path(scratch) / "otel")]):
            found = subprocess.run([python, "-c", code, *path], check=True, capture_output=True, text=True).stdout
            pins.update({name.lower().replace("_", "-"): version for name, version in json.loads(found).items()})
    tree = {_name(ROOT / line.removeprefix("-e ").split("[")[0] / "setup.cfg") for line in requirements
            if line.startswith("-e ")}
    header = [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("#")]
    body = [f"{name}=={version}" for name, version in sorted(pins.items()) if name not in NOT_PINNED | tree]
    CONSTRAINTS.write_text("\n".join(header + body) + "\n")
    print(f"constraints.txt: {len(body)} pins; now `make test`")


def _name(setup_cfg: Path) -> str:
    setup = configparser.ConfigParser()
    setup.read(setup_cfg)
    return setup["metadata"]["name"].lower().replace("_", "-")


if __name__ == "__main__":
    main()
