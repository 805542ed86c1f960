"""Plugin loading (goalhub.plugins): a plugin that fails to import, disabled plugins, a
misspelled hook. Loading real installed plugins is in ``test_broken_plugins.py`` and
``test_plugin_uninstall.py``.
"""

from __future__ import annotations

import pluggy
import pytest

import goalhub
from goalhub import plugins, receivers


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(monkeypatch, tmp_path):
    (tmp_path / "good_plugin.py").write_text(
        "import goalhub\n@goalhub.receiver('goal.created')\ndef good(goal_id):\n    return goal_id\n"
    )
    (tmp_path / "bad_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GOALHUB_PLUGINS", "bad_plugin,good_plugin")
    plugins.reset()
    infos = {info.name: info for info in plugins.plugin_infos()}
    assert "missing dependency xyz" in infos["bad_plugin"].error
    assert infos["good_plugin"].error is None
    assert [r.name for r in receivers.receivers("goal.created")][0] == "good"


def test_disabled_plugins_are_blocked(monkeypatch):
    monkeypatch.setenv("GOALHUB_DISABLED_PLUGINS", "goalhub.lifecycle")
    plugins.reset()
    assert receivers.receivers("goal.created") == []
    assert next(i for i in plugins.plugin_infos() if i.name == "goalhub.lifecycle").blocked


def test_a_misspelled_hook_fails_loudly(inline_plugin):
    class Misspelled:
        @goalhub.hookimpl
        def goal_creatd(self, goal_id):
            pass

    with pytest.raises(pluggy.PluginValidationError):
        inline_plugin(Misspelled(), "misspelled")
    plugins.unregister("misspelled")

