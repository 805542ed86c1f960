"""The public plugin API: ``goalhub.__all__`` is what a plugin may use, and all of it resolves."""

from __future__ import annotations

import subprocess
import sys

import goalhub


def test_every_public_name_resolves() -> None:
    assert len(goalhub.__all__) == len(set(goalhub.__all__))
    for name in goalhub.__all__:
        assert getattr(goalhub, name) is not None, name
        assert name in dir(goalhub), name
    namespace: dict = {}
    exec(f"from goalhub import {', '.join(goalhub.__all__)}", namespace)
    assert set(goalhub.__all__) <= set(namespace)


def test_public_names_are_the_core_objects_themselves() -> None:
    from goalhub import binding, outbound

    assert goalhub.BindingConflict is binding.BindingConflict  # ``except goalhub.BindingConflict`` catches the core's
    assert goalhub.outbound_records is outbound.records


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        goalhub.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("goalhub.no_such_name resolved")


def test_importing_goalhub_stays_cheap() -> None:
    """A plugin module imports goalhub at import time: Redis, RQ and the stores load when used."""
    code = "import sys, goalhub; print(sorted(m for m in ('rq', 'redis', 'mongomock', 'rq_scheduler') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_setting_reads_the_environment_when_asked(monkeypatch) -> None:
    monkeypatch.setenv("GOALHUB_CHEERS_SINK", "http://sink")
    assert goalhub.setting("GOALHUB_CHEERS_SINK") == "http://sink"
    monkeypatch.setenv("GOALHUB_CHEERS_SINK", "")
    assert goalhub.setting("GOALHUB_CHEERS_SINK", "default") == "default"
    monkeypatch.delenv("GOALHUB_CHEERS_SINK")
    assert goalhub.setting("GOALHUB_CHEERS_SINK") is None
