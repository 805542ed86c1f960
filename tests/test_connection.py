"""The embedded Redis's socket (goalhub.connection): a long home gets its socket in a private
directory, and a directory others can reach is refused (issue 12, row 5).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from goalhub import connection


def test_a_long_home_gets_its_socket_in_a_private_directory(tmp_path):
    home = tmp_path / ("h" * 90)
    home.mkdir()
    path = connection._socket_path(home)
    assert len(str(path)) < 107 and not str(path.parent) == "/tmp"
    info = os.lstat(path.parent)
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700


@pytest.mark.parametrize("make_unsafe", ["open", "symlink"])
def test_a_socket_directory_others_can_reach_is_refused(tmp_path, monkeypatch, make_unsafe):
    runtime = Path(tempfile.mkdtemp(dir="/tmp", prefix="gh"))
    try:
        if make_unsafe == "open":
            (runtime / "goalhub").mkdir(mode=0o777)
            os.chmod(runtime / "goalhub", 0o777)
        else:
            elsewhere = runtime / "elsewhere"
            elsewhere.mkdir(mode=0o700)
            (runtime / "goalhub").symlink_to(elsewhere)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        home = tmp_path / ("h" * 90)
        home.mkdir()
        with pytest.raises(connection.UnsafeSocketDirectory):
            connection.ensure_embedded_redis(home)
    finally:
        import shutil

        shutil.rmtree(runtime)

