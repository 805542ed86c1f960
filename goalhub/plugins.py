"""The plugin host: one pluggy ``PluginManager`` for the process.

Plugins are found through the ``goalhub`` entry-point group, loaded lazily and once.
``GOALHUB_DISABLED_PLUGINS`` (comma-separated entry-point names) blocks plugins;
``GOALHUB_LOAD_PLUGINS``, when set (even empty), loads only the entry points it names;
``GOALHUB_PLUGINS`` (comma-separated module names) loads extra plugin modules that are
not installed as packages (handy for a test plugin in worker processes). The core
lifecycle receiver is an ordinary plugin in ``DEFAULT_PLUGINS``.

A broken plugin never stops the others: a plugin that fails to import, implements a hook
goalhub does not have (with a "did you mean" hint), asks a hook for an argument it does not
have, or whose ``goal_types`` hook raises or returns something that is not a ``GoalType`` is
left out and reported by name and reason (``problems()``: ``goalhub plugins``, ``/readyz``,
the log of every process once). Two plugins claiming one goal type name are both reported;
the plugin whose name sorts first keeps it. ``GOALHUB_STRICT_PLUGINS=1`` makes any of these
fatal (``PluginsBroken``), for a plugin author's CI.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import logging
import os
import site
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from goalhub import config, hookspecs
from goalhub.errors import GoalhubError
from goalhub.goaltypes import GoalType
from goalhub.redaction import redact

log = logging.getLogger(__name__)

DEFAULT_PLUGINS = ("goalhub.lifecycle",)
ENTRY_POINT_GROUP = "goalhub"


@dataclass
class PluginInfo:
    name: str
    module: str
    dist: str | None = None
    version: str | None = None
    error: str | None = None  # why the plugin is not loaded (redacted: an exception's text)
    blocked: bool = False
    warnings: list[str] = field(default_factory=list)  # loaded, but something is wrong


class PluginsBroken(GoalhubError):
    """Strict mode (``GOALHUB_STRICT_PLUGINS``) and a plugin is broken."""


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
_goal_types: tuple[tuple[tuple[str, int], ...], dict[str, GoalType], dict[str, GoalType]] | None = None
_loaded_from: dict[str, str] = {}  # what was installed when the plugins loaded: installed()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with every plugin loaded (the first call loads them).
    In strict mode a broken plugin raises ``PluginsBroken`` instead."""
    pm = loaded_plugin_manager()
    if config.settings().STRICT_PLUGINS:
        broken = problems()
        if broken:
            raise PluginsBroken(
                "broken plugins (GOALHUB_STRICT_PLUGINS): "
                + "; ".join(f"{p['plugin']}: {p['reason']}" for p in broken)
            )
    return pm


def loaded_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, broken plugins left out and reported, whatever the strict mode."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("goalhub")
            pm.add_hookspecs(hookspecs)
            _infos.clear()
            _loaded_from.clear()
            _load(pm)
            _check_goal_types(pm)
            _pm = pm
            for problem in problems():
                log.error("goalhub plugin %s is broken: %s", problem["plugin"], problem["reason"])
        return _pm


def _core_version() -> str | None:
    try:
        return metadata.version("goalhub")
    except metadata.PackageNotFoundError:
        return None


def _load(pm: pluggy.PluginManager) -> None:
    disabled = set(config.settings().DISABLED_PLUGINS)
    allowed = config.load_plugins()
    for name in disabled:
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        _register_module(pm, module_name, module_name, dist="goalhub", version=_core_version())
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        _loaded_from[entry_point.name] = _origin(entry_point)
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
        _register(pm, info, entry_point.load)
    for module_name in config.settings().PLUGINS:
        if module_name:
            _register_module(pm, module_name, module_name)


def installed() -> dict[str, str]:
    """The plugin distributions installed right now, read afresh from the entry points:
    entry-point name -> "dist version (module)"."""
    return {entry_point.name: _origin(entry_point) for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _origin(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.name if dist else '-'} {dist.version if dist else ''} ({entry_point.value})"


def installed_changes() -> list[str]:
    """How the installed plugin distributions differ from those this process loaded (a plugin
    installed, removed or upgraded since): empty when they are the same. Only a restart
    (``goalhub reload``) loads the new ones."""
    loaded_plugin_manager()
    now = installed()
    changes = [f"installed since: {name} {now[name]}" for name in sorted(set(now) - set(_loaded_from))]
    changes += [f"removed since: {name} {_loaded_from[name]}" for name in sorted(set(_loaded_from) - set(now))]
    changes += [f"changed since: {name} {_loaded_from[name]} -> {now[name]}"
                for name in sorted(set(now) & set(_loaded_from)) if now[name] != _loaded_from[name]]
    return changes


def path_files() -> frozenset[str]:
    """The ``.pth`` files in this interpreter's site directories now (an editable install,
    ``pip install -e``, puts the plugin's path or import hook in one)."""
    dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    return frozenset(os.path.join(d, name) for d in dirs if os.path.isdir(d)
                     for name in os.listdir(d) if name.endswith(".pth"))


def read_path_files_since(known: frozenset[str]) -> list[str]:
    """Read the ``.pth`` files that are not in ``known`` (taken by ``path_files()`` when this
    process, or the parent that forked it, started), as Python's ``site`` does at start: for a
    process forked by a parent that was running before a plugin was installed editable, which
    would otherwise never see it. Returns those read."""
    new = sorted(path_files() - known)
    for path in new:
        site.addpackage(os.path.dirname(path), os.path.basename(path), None)
    if new:
        importlib.invalidate_caches()
    return new


def _register_module(pm: pluggy.PluginManager, name: str, module_name: str, **meta: Any) -> None:
    info = PluginInfo(name=name, module=module_name, **meta)
    _infos[name] = info
    if pm.is_blocked(name):
        info.blocked = True
        return
    _register(pm, info, lambda: importlib.import_module(module_name))


def _register(pm: pluggy.PluginManager, info: PluginInfo, load: Any) -> None:
    """Import and register one plugin; whatever is wrong with it leaves it out, reported."""
    try:
        plugin = load()
    except Exception as exc:  # one broken plugin must not stop the others
        info.error = redact(f"{type(exc).__name__}: {exc}")
        return
    try:
        pm.register(plugin, name=info.name)
    except pluggy.PluginValidationError as exc:
        # pluggy >= 1.6 validates before it registers anything; older ones may not have.
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        info.error = redact("invalid hook implementation: " + " ".join(str(exc).split()))
        return
    except ValueError as exc:  # the same module registered twice, under two names
        info.error = redact(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        return
    unknown = unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin)
        info.error = "; ".join(unknown)


def unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """What is wrong with each hook implementation of ``plugin`` that names no goalhub hook."""
    known = sorted(name for name in dir(pm.hook) if not name.startswith("_")
                   and getattr(pm.hook, name).has_spec())
    found = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        if all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin):
            continue
        close = difflib.get_close_matches(caller.name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; goalhub's hooks: {', '.join(known)}"
        found.append(f"unknown hook {caller.name!r}{hint}")
    return found


def _contributions(pm: pluggy.PluginManager) -> tuple[list[tuple[str, GoalType]], dict[str, str]]:
    """Every plugin's goal types, in plugin-name order, and the plugins whose hook is broken."""
    valid: list[tuple[str, GoalType]] = []
    broken: dict[str, str] = {}
    for impl in sorted(pm.hook.goal_types.get_hookimpls(), key=lambda impl: impl.plugin_name):
        try:
            contributed = impl.function()
        except Exception as exc:
            broken[impl.plugin_name] = redact(f"goal_types hook raised {type(exc).__name__}: {exc}")
            continue
        if contributed is None:
            continue
        if not isinstance(contributed, list | tuple):
            broken[impl.plugin_name] = (
                f"goal_types hook returned a {type(contributed).__name__}, not a list of goalhub.GoalType"
            )
            continue
        wrong = [item for item in contributed if not isinstance(item, GoalType)]
        if wrong:
            broken[impl.plugin_name] = (
                f"goal_types hook returned {wrong[0]!r:.80} ({type(wrong[0]).__name__}), not a goalhub.GoalType"
            )
            continue
        valid.extend((impl.plugin_name, goal_type) for goal_type in contributed)
    return valid, broken


def _check_goal_types(pm: pluggy.PluginManager) -> None:
    """At load: leave out plugins whose goal_types hook is broken, report clashing names."""
    valid, broken = _contributions(pm)
    for name, reason in broken.items():
        pm.unregister(name=name)
        _info(name).error = reason
    owners: dict[str, list[str]] = {}
    for plugin, goal_type in valid:
        if plugin not in broken:
            owners.setdefault(goal_type.name, []).append(plugin)
    for type_name, claimed_by in owners.items():
        if len(claimed_by) < 2:
            continue
        winner = claimed_by[0]
        for plugin in sorted(set(claimed_by), key=claimed_by.index):
            others = ", ".join(p for p in claimed_by if p != plugin) or "itself, twice"
            verdict = "it keeps it (first by plugin name)" if plugin == winner else f"{winner} keeps it (first by plugin name)"
            _info(plugin).warnings.append(f"goal type {type_name!r} is also claimed by {others}; {verdict}")


def _info(name: str) -> PluginInfo:
    return _infos.setdefault(name, PluginInfo(name=name, module=name))


def goal_types() -> dict[str, GoalType]:
    """The installed goal types by name. A name claimed twice goes to the plugin whose name
    sorts first; a broken ``goal_types`` hook contributes nothing."""
    return _types_and_classes()[0]


def _types_and_classes() -> tuple[dict[str, GoalType], dict[str, GoalType]]:
    global _goal_types
    pm = loaded_plugin_manager()
    key = tuple(sorted((name, id(plugin)) for name, plugin in pm.list_name_plugin()))
    with _lock:
        if _goal_types is None or _goal_types[0] != key:
            valid, broken = _contributions(pm)
            for name, reason in broken.items():
                log.error("goalhub plugin %s: %s", name, reason)
            types: dict[str, GoalType] = {}
            for _, goal_type in valid:
                types.setdefault(goal_type.name, goal_type)
            classes: dict[str, GoalType] = {}
            for goal_type in types.values():
                classes.setdefault(goal_type.goal_class, goal_type)
            _goal_types = (key, types, classes)
        return _goal_types[1], _goal_types[2]


def goal_classes() -> dict[str, GoalType]:
    """The goal classes the installed goal types create, each with its (first) goal type
    (worked out with ``goal_types``, once per set of plugins: dispatch asks for every receiver)."""
    return _types_and_classes()[1]


def session_fields() -> dict[str, Any]:
    """The fields a new session document carries for the installed goal types, each with its
    initial value (a fresh copy)."""
    fields: dict[str, Any] = {}
    for goal_type in goal_types().values():
        for name, value in goal_type.session_fields.items():
            fields.setdefault(name, value)
    return copy.deepcopy(fields)


def problems() -> list[dict[str, Any]]:
    """Every broken plugin, by name and reason: ``loaded`` False when it was left out."""
    loaded_plugin_manager()
    found = []
    for info in list(_infos.values()):
        if info.blocked:
            continue
        if info.error:
            found.append({"plugin": info.name, "reason": info.error, "loaded": False})
        found.extend({"plugin": info.name, "reason": warning, "loaded": True} for warning in info.warnings)
    return found


def plugin_infos() -> list[PluginInfo]:
    """Every plugin goalhub knows of: loaded, blocked, failed, and ones registered by code."""
    pm = loaded_plugin_manager()
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
    global _pm, _goal_types
    with _lock:
        _pm = None
        _goal_types = None
        _infos.clear()
        _loaded_from.clear()
