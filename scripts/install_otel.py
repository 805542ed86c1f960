"""Install goalhub's ``otel`` extra (setup.cfg, the one list) into ``<venv>/otel``: a directory
outside the venv's import path, which only the trace tests and ``benchmarks/bench_tracing.py``
put on theirs (``tests/world.py``'s ``OTEL_SITE``).

Why not into the venv: redis-py imports ``opentelemetry.sdk.metrics`` at its own import
whenever it can, which costs each Python process about 0.3 s of CPU here. The suite starts
some 400 goalhub processes; with the SDK in the venv, `make test` took about a minute longer.
Run by `make install` and tox with the venv's python: ``python scripts/install_otel.py``.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    requirements = [line.strip() for line in setup["options.extras_require"]["otel"].splitlines() if line.strip()]
    target = Path(sys.prefix) / "otel"
    shutil.rmtree(target, ignore_errors=True)
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():  # uv when `make install` could have it, else pip
        command = [str(uv), "pip", "install", "--quiet", "--compile-bytecode", "--python", sys.executable,
                   "--target", str(target)]
    else:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--target", str(target)]
    # At the versions the suite last passed on (constraints.txt, as requirements-dev.txt installs).
    subprocess.run([*command, "-c", str(ROOT / "constraints.txt"), *requirements], check=True)


if __name__ == "__main__":
    main()
