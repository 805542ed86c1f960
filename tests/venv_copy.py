"""A private copy of the project's venv, for tests that install or uninstall a plugin without
changing the venv every other test runs in (so they run beside the parallel suite)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path


def private_venv(tmp_path: Path) -> Path:
    """A venv of its own (its python returned) that has what the project's .venv has: each
    distribution's metadata, ``.pth`` file and editable finder copied (what ``pip uninstall``
    removes), each package directory linked (what it never touches for an editable install)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    shared = Path(sysconfig.get_paths()["purelib"])
    private = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    for entry in shared.iterdir():
        if entry.is_dir() and entry.name.endswith(".dist-info"):
            shutil.copytree(entry, private / entry.name)
        elif entry.is_dir():
            (private / entry.name).symlink_to(entry, target_is_directory=True)
        else:
            shutil.copy2(entry, private / entry.name)
    return python
