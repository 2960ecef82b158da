"""Plugin loading (pluggy + the ``pefthub`` entry-point group) and the registries built from it.

Built-in plugins are entry points of the ``pefthub`` distribution itself, so they load through
exactly the code path a third-party package uses. Environment variables, in the style of pytest and
llm:

* ``PEFTHUB_LOAD_PLUGINS=a,b``: an allowlist of third-party plugins (entry-point or distribution
  names) to load. Built-ins always load. Set it to an empty string to load no third-party plugin.
* ``PEFTHUB_DISABLE_PLUGIN_AUTOLOAD=1``: load no third-party plugin (same as an empty allowlist).

Every failure (a plugin that raises at import or inside a hook, a hook with a wrong signature, an
unknown hook, a duplicate name) is one line naming the plugin and its distribution; when several
plugins are broken, one :class:`~pefthub.errors.PluginError` reports them all. Allowlisted names
that match no installed plugin are kept in :attr:`PluginHost.unmatched_allowlist`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from pefthub import hookspecs
from pefthub.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "pefthub"
BUILTIN_DISTRIBUTION = "pefthub"
HOOK_NAMES = ("register_methods", "register_tasks", "register_rewards", "register_trainers")


@dataclass
class PluginInfo:
    """What `pefthub plugins` shows for one loaded plugin."""

    name: str
    distribution: str
    version: str
    module: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)


def _allowlist() -> set[str] | None:
    if os.environ.get("PEFTHUB_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0"):
        return set()
    raw = os.environ.get("PEFTHUB_LOAD_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    seen: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        # The same distribution can be visible twice (e.g. editable install + sys.path); keep one.
        seen.setdefault(ep.name, ep)
    return sorted(seen.values(), key=lambda ep: (ep.dist.name != BUILTIN_DISTRIBUTION, ep.name))


class PluginHost:
    """Owns the pluggy manager, the loaded-plugin table and the combined registries."""

    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager("pefthub")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        #: Names in PEFTHUB_LOAD_PLUGINS that match no installed entry point or distribution.
        self.unmatched_allowlist: list[str] = []
        if load_entry_points:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        allow = _allowlist()
        entry_points = _entry_points()
        if allow:
            installed = {ep.name for ep in entry_points} | {ep.dist.name for ep in entry_points if ep.dist}
            self.unmatched_allowlist = sorted(allow - installed)
        broken: list[str] = []
        for ep in entry_points:
            dist = ep.dist.name if ep.dist else "?"
            builtin = dist == BUILTIN_DISTRIBUTION
            if not builtin and allow is not None and ep.name not in allow and dist not in allow:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the whole tool down silently
                broken.append(f"plugin '{ep.name}' (from {dist}) failed to import: {_exc_line(exc)}")
                continue
            version = ep.dist.version if ep.dist else "?"
            try:
                self.add(module, ep.name, distribution=dist, version=version, builtin=builtin)
            except PluginError as exc:
                broken.append(str(exc))
        _raise_all(broken)

    def add(self, plugin: Any, name: str, *, distribution: str = "(in-process)", version: str = "",
            builtin: bool = False) -> None:
        """Register a plugin object (module or instance). Used for entry points and by tests."""
        if name in self.info:
            raise PluginError(f"plugin '{name}' (from {distribution}) is registered twice")
        problems = self._hook_problems(plugin)
        if problems:
            raise PluginError(f"plugin '{name}' (from {distribution}) " + "; ".join(problems))
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:  # anything the check above did not foresee
            self.pm.unregister(name=name)
            raise PluginError(f"plugin '{name}' (from {distribution}) is invalid: {' '.join(str(exc).split())}") from exc
        hooks = sorted(c.name for c in (self.pm.get_hookcallers(plugin) or []))
        self.info[name] = PluginInfo(name, distribution, version, getattr(plugin, "__name__", repr(plugin)),
                                     builtin, hooks)

    def _hook_problems(self, plugin: Any) -> list[str]:
        """What is wrong with the plugin's hook implementations, one phrase each (pluggy's own
        messages span several lines and stop at the first problem)."""
        import difflib
        import inspect

        problems = []
        for attr in dir(plugin):
            if self.pm.parse_hookimpl_opts(plugin, attr) is None:
                continue
            if attr not in HOOK_NAMES:
                close = difflib.get_close_matches(attr, HOOK_NAMES, n=1)
                problems.append(f"implements unknown hook '{attr}'"
                                + (f" (did you mean '{close[0]}'?)" if close else f" (hooks: {', '.join(HOOK_NAMES)})"))
                continue
            try:
                signature = inspect.signature(getattr(plugin, attr))
            except (TypeError, ValueError):
                continue
            params = [n for n, p in signature.parameters.items()  # pluggy passes only these
                      if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            expected = list(getattr(self.pm.hook, attr).spec.argnames)
            if not set(params) <= set(expected):
                problems.append(f"implements {attr}({', '.join(params)}), but the hook is {attr}({', '.join(expected)})")
        return problems

    def collect(self, hook_name: str, key: Callable[..., str]) -> "Registry":
        """Call every implementation of ``hook_name`` with a register callable; combine results.

        Every plugin is called even when an earlier one fails; all failures are raised together.
        """
        registry = Registry(hook_name.removeprefix("register_"))
        broken: list[str] = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            plugin_name = impl.plugin_name
            info = self.info.get(plugin_name)
            origin = f"plugin '{plugin_name}' (from {info.distribution if info else '?'})"

            def register(*args: Any, _plugin: str = plugin_name, _origin: str = origin) -> None:
                registry.add(key(*args), args[-1], _plugin, origin=_origin)

            try:
                impl.function(register=register)
            except PluginError as exc:
                broken.append(str(exc))
            except Exception as exc:
                broken.append(f"{origin} raised in {hook_name}: {_exc_line(exc)}")
        _raise_all(broken)
        return registry


def _exc_line(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _raise_all(broken: list[str]) -> None:
    """One :class:`PluginError` (one line) reporting every broken plugin."""
    if len(broken) == 1:
        raise PluginError(broken[0])
    if broken:
        raise PluginError(f"{len(broken)} plugins are broken: " + "; ".join(broken))


class Registry:
    """Name -> registered object for one kind (methods, tasks, rewards, trainers)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.items: dict[str, Any] = {}
        self.owner: dict[str, str] = {}
        self.origin: dict[str, str] = {}

    def add(self, name: str, obj: Any, plugin: str, *, origin: str | None = None) -> None:
        """Record ``obj`` under ``name`` for ``plugin``; ``origin`` names it in errors (plugin and distribution)."""
        origin = origin or f"plugin '{plugin}'"
        if not isinstance(name, str) or not name:
            raise PluginError(f"{origin} registered a {self.kind[:-1]} without a name: {obj!r}")
        if name in self.items:
            raise PluginError(
                f"{self.kind[:-1]} '{name}' is registered by both {self.origin[name]} and {origin}"
            )
        self.items[name] = obj
        self.owner[name] = plugin
        self.origin[name] = origin

    def get(self, name: str) -> Any:
        try:
            return self.items[name]
        except KeyError:
            known = ", ".join(sorted(self.items)) or "none"
            raise ConfigError(f"unknown {self.kind[:-1]} '{name}' (known: {known})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.items

    def __iter__(self):
        return iter(sorted(self.items))

    def __len__(self) -> int:
        return len(self.items)


def _class_name_key(cls: Any) -> str:
    return getattr(cls, "name", None)


def _reward_key(name: str, fn: Any) -> str:
    return name


@functools.lru_cache(maxsize=1)
def host() -> PluginHost:
    return PluginHost()


@functools.lru_cache(maxsize=None)
def _registry(hook_name: str) -> Registry:
    key = _reward_key if hook_name == "register_rewards" else _class_name_key
    return host().collect(hook_name, key)


def methods() -> Registry:
    return _registry("register_methods")


def tasks() -> Registry:
    return _registry("register_tasks")


def rewards() -> Registry:
    return _registry("register_rewards")


def trainers() -> Registry:
    return _registry("register_trainers")


def reset() -> None:
    """Forget loaded plugins and registries (tests, or after changing the environment variables)."""
    host.cache_clear()
    _registry.cache_clear()
