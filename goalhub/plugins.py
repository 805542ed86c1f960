"""The plugin host: one pluggy ``PluginManager`` for the process.

Plugins are found through the ``goalhub`` entry-point group, loaded lazily and once.
``GOALHUB_DISABLED_PLUGINS`` (comma-separated entry-point names) blocks plugins;
``GOALHUB_LOAD_PLUGINS``, when set (even empty), loads only the entry points it names;
``GOALHUB_PLUGINS`` (comma-separated module names) loads extra plugin modules that are
not installed as packages (handy for a test plugin in worker processes). A plugin that
fails to import is reported by name with its error and the others still load. The core
lifecycle receiver is an ordinary plugin in ``DEFAULT_PLUGINS``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from goalhub import config, hookspecs

log = logging.getLogger(__name__)

DEFAULT_PLUGINS = ("goalhub.lifecycle",)
ENTRY_POINT_GROUP = "goalhub"


@dataclass
class PluginInfo:
    name: str
    module: str
    dist: str | None = None
    version: str | None = None
    error: str | None = None
    blocked: bool = False


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with every plugin loaded (the first call loads them)."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("goalhub")
            pm.add_hookspecs(hookspecs)
            _infos.clear()
            _load(pm)
            pm.check_pending()
            _pm = pm
        return _pm


def _core_version() -> str | None:
    try:
        return metadata.version("goalhub")
    except metadata.PackageNotFoundError:
        return None


def _load(pm: pluggy.PluginManager) -> None:
    disabled = config.disabled_plugins()
    allowed = config.load_plugins()
    for name in disabled:
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        _register_module(pm, module_name, module_name, dist="goalhub", version=_core_version())
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            module=entry_point.value,
            dist=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        _infos[info.name] = info
        if info.name in disabled or (allowed is not None and info.name not in allowed):
            info.blocked = True
            continue
        try:
            pm.register(entry_point.load(), name=info.name)
        except Exception as exc:  # one broken plugin must not stop the others
            info.error = f"{type(exc).__name__}: {exc}"
            log.error("goalhub plugin %s failed to load: %s", info.name, info.error)
    for module_name in (m.strip() for m in (config.env("GOALHUB_PLUGINS") or "").split(",")):
        if module_name:
            _register_module(pm, module_name, module_name)


def _register_module(pm: pluggy.PluginManager, name: str, module_name: str, **meta: Any) -> None:
    info = PluginInfo(name=name, module=module_name, **meta)
    _infos[name] = info
    if pm.is_blocked(name):
        info.blocked = True
        return
    try:
        pm.register(importlib.import_module(module_name), name=name)
    except Exception as exc:
        info.error = f"{type(exc).__name__}: {exc}"
        log.error("goalhub plugin %s failed to load: %s", name, info.error)


def plugin_infos() -> list[PluginInfo]:
    """Every plugin goalhub knows of: loaded, blocked, failed, and ones registered by code."""
    pm = get_plugin_manager()
    infos = dict(_infos)
    for name, plugin in pm.list_name_plugin():
        if name not in infos:
            infos[name] = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)))
    return list(infos.values())


def plugin_info(name: str) -> PluginInfo:
    return next((info for info in plugin_infos() if info.name == name), PluginInfo(name=name, module=name))


def register(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object in this process (tests, embedding); returns its name."""
    pm = get_plugin_manager()
    registered = pm.register(plugin, name=name)
    pm.check_pending()
    return registered


def unregister(name: str) -> None:
    get_plugin_manager().unregister(name=name)


def reset() -> None:
    """Drop the manager; the next call loads plugins again (after an install, in tests)."""
    global _pm
    with _lock:
        _pm = None
        _infos.clear()
