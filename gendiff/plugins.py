"""The plugin manager and the per-family component registries.

- One :class:`pluggy.PluginManager` named ``"gendiff"`` with the hooks of :mod:`gendiff.hookspecs`.
- gendiff's own components (:mod:`gendiff.builtin`) are registered through the same hooks.
- Third-party plugins are discovered through the entry-point group ``gendiff``. A plugin whose
  import fails is skipped with a warning naming it (and listed by ``gendiff plugins``); the rest
  keeps working.
- ``GENDIFF_DISABLE_PLUGINS=1`` turns third-party autoload off; ``GENDIFF_PLUGINS=a,b`` loads
  only the named entry points.
- One :class:`Registry` per family: lookup by name, an unknown name lists the available ones,
  and the same name from two plugins is an error naming both.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .component import FAMILIES, INTERFACES
from .errors import DuplicateNameError, PluginError, UnknownComponentError
from .hookspecs import hookimpl

ENTRY_POINT_GROUP = "gendiff"

#: family -> (hook name, plural used in messages)
HOOKS = {
    "schedule": "gendiff_register_schedules",
    "parameterization": "gendiff_register_parameterizations",
    "variance": "gendiff_register_variances",
    "weighting": "gendiff_register_weightings",
    "backbone": "gendiff_register_backbones",
    "sampler": "gendiff_register_samplers",
    "time_sampler": "gendiff_register_time_samplers",
    "dataset": "gendiff_register_datasets",
    "metric": "gendiff_register_metrics",
    "logger": "gendiff_register_loggers",
}
assert set(HOOKS) == set(FAMILIES)
#: the event hooks (see gendiff.events)
EVENT_HOOKS = ("gendiff_train_step_end", "gendiff_checkpoint_written", "gendiff_samples_written", "gendiff_run_end")


class PluginLoadWarning(UserWarning):
    """A third-party plugin could not be imported or its hook failed; it was skipped."""


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``gendiff plugins`` shows it."""

    name: str
    version: str | None = None
    module: str | None = None
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    """A component class and the plugin that registered it."""

    cls: type
    plugin: str


class Registry:
    """The components of one family, by name."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Registration] = {}

    def add(self, cls: type, plugin: str) -> None:
        """Register ``cls``; refuse a class without a name, one of another family (naming the
        plugin and both families) and a name registered twice (naming both plugins)."""
        family = getattr(cls, "family", None) if isinstance(cls, type) else None
        if family != self.family:
            what = (f"a {family}" if family else f"{cls!r}, which is not a component class (no family)")
            raise PluginError(
                f"plugin '{plugin}' returned {getattr(cls, '__qualname__', repr(cls))} from "
                f"{HOOKS[self.family]}, but it is {what}, not a {self.family}: a {self.family} must subclass "
                f"{INTERFACES[self.family]}."
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin '{plugin}' registered a {self.family} ({cls!r}) without a 'name' attribute."
            )
        if name in self._entries:
            other = self._entries[name].plugin
            raise DuplicateNameError(
                f"the {self.family} name '{name}' is registered twice: by plugin '{other}' "
                f"({self._entries[name].cls.__qualname__}) and by plugin '{plugin}' "
                f"({cls.__qualname__}). Uninstall one of them, or disable it with GENDIFF_PLUGINS."
            )
        self._entries[name] = Registration(cls, plugin)

    def get(self, name: str) -> type:
        """The class registered as ``name``; an unknown name lists the available ones."""
        try:
            return self._entries[name].cls
        except (KeyError, TypeError):
            available = ", ".join(sorted(self._entries)) or "none"
            raise UnknownComponentError(
                f"unknown {self.family} '{name}'. Available {self.family}s: {available}."
            ) from None

    def plugin_of(self, name: str) -> str:
        self.get(name)
        return self._entries[name].plugin

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


class PluginSystem:
    """A plugin manager plus the registries built from it."""

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo]):
        self.pm = pm
        self.plugins = infos
        self.registries = {family: Registry(family) for family in FAMILIES}
        self._collect()

    def _collect(self) -> None:
        for family, hook_name in HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            # call every implementation separately to know which plugin supplied what
            for impl in reversed(hook.get_hookimpls()):  # registration order
                plugin = impl.plugin_name
                info = self.plugins.setdefault(plugin, PluginInfo(plugin))
                try:
                    result = impl.function()
                except Exception as exc:  # a broken plugin must not break gendiff
                    info.error = f"{hook_name} raised {type(exc).__name__}: {exc}"
                    warnings.warn(
                        f"gendiff plugin '{plugin}' failed in {hook_name} and was skipped: {exc}",
                        PluginLoadWarning,
                        stacklevel=2,
                    )
                    continue
                if result is None:
                    continue
                if not isinstance(result, (list, tuple)):
                    self._refuse(info, PluginError(f"plugin '{plugin}': {hook_name} must return a list of classes, "
                                                   f"got {type(result).__name__}."))
                    continue
                for cls in result:
                    try:
                        self.registries[family].add(cls, plugin)
                    except DuplicateNameError:
                        raise  # two plugins claim one name: there is no safe choice between them
                    except PluginError as exc:
                        self._refuse(info, exc)
                        continue
                    info.components.setdefault(family, []).append(cls.name)

    @staticmethod
    def _refuse(info: PluginInfo, exc: PluginError) -> None:
        """A malformed registration: the class is not registered, the plugin's error recorded and
        a :class:`PluginLoadWarning` raised; everything else keeps working."""
        info.error = str(exc)
        warnings.warn(f"{exc} It was not registered.", PluginLoadWarning, stacklevel=3)

    def registry(self, family: str) -> Registry:
        try:
            return self.registries[family]
        except KeyError:
            raise UnknownComponentError(
                f"unknown component family '{family}'. Families: {', '.join(FAMILIES)}."
            ) from None


def _third_party_entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def create_plugin_system(
    extra_plugins: Iterable[tuple[str, Any]] = (), autoload: bool | None = None
) -> PluginSystem:
    """Build a fresh plugin system.

    ``extra_plugins``: ``(name, module_or_object)`` pairs registered after the built-ins (tests
    and embedding applications use this). ``autoload``: discover entry points; by default yes
    unless ``GENDIFF_DISABLE_PLUGINS`` is set to a true value.
    """
    from . import builtin

    pm = pluggy.PluginManager("gendiff")
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    pm.register(builtin, name="gendiff")
    infos["gendiff"] = PluginInfo("gendiff", _version("gendiff"), builtin.__name__)

    if autoload is None:
        autoload = os.environ.get("GENDIFF_DISABLE_PLUGINS", "").strip().lower() not in (
            "1", "true", "yes", "on",
        )
    if autoload:
        allow = os.environ.get("GENDIFF_PLUGINS")
        allowed = None if allow is None else {a.strip() for a in allow.split(",") if a.strip()}
        for ep in _third_party_entry_points():
            if allowed is not None and ep.name not in allowed:
                continue
            if pm.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, getattr(dist, "version", None), ep.value)
            infos[ep.name] = info
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                info.error = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"gendiff plugin '{ep.name}' ({ep.value}) could not be loaded and was "
                    f"skipped: {type(exc).__name__}: {exc}",
                    PluginLoadWarning,
                    stacklevel=2,
                )
    for name, plugin in extra_plugins:
        infos[name] = PluginInfo(name, None, getattr(plugin, "__name__", repr(plugin)))
        pm.register(plugin, name=name)
    return PluginSystem(pm, infos)


def _version(dist_name: str) -> str | None:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


_default: PluginSystem | None = None


def plugin_system() -> PluginSystem:
    """The process-wide plugin system, created on first use."""
    global _default
    if _default is None:
        _default = create_plugin_system()
    return _default


def reset_plugin_system() -> None:
    """Forget the process-wide plugin system (the next use rediscovers plugins)."""
    global _default
    _default = None


def registry(family: str, system: PluginSystem | None = None) -> Registry:
    """The registry of one family, e.g. ``registry("schedule").get("linear")``."""
    return (system or plugin_system()).registry(family)


def get_component(family: str, name: str, system: PluginSystem | None = None) -> type:
    """Shorthand for ``registry(family).get(name)``."""
    return registry(family, system).get(name)


__all__ = [
    "ENTRY_POINT_GROUP",
    "EVENT_HOOKS",
    "HOOKS",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginSystem",
    "Registry",
    "create_plugin_system",
    "get_component",
    "hookimpl",
    "plugin_system",
    "registry",
    "reset_plugin_system",
]
