"""Training events: what the trainer and ``gendiff run`` tell plugins while a run goes on.

Plugins receive events through the event hooks of :mod:`gendiff.hookspecs`
(``gendiff_train_step_end``, ``gendiff_checkpoint_written``, ``gendiff_samples_written``,
``gendiff_run_end``), on the main process only, in the order the plugins were registered. A hook
implementation takes any subset of the documented arguments. One that raises is reported once with
a :class:`PluginRuntimeWarning` naming the plugin and is not called again during this process:
a broken logger never stops a training run, and nothing already written is lost.

The recipe's loggers (``[train] loggers``, :mod:`gendiff.loggers`) receive the same events as
method calls, with the same policy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PluginRuntimeWarning(UserWarning):
    """A plugin's event hook raised; it was switched off for the rest of the process."""


@dataclass(frozen=True)
class RunInfo:
    """The run an event belongs to."""

    run_dir: Path  #: the run folder
    recipe: dict  #: the resolved recipe (every table, defaults filled in)
    model: Any  #: the composed model being trained (its backbone holds the current weights)
    steps: int  #: train.steps, the run's planned length
    world: int = 1  #: the number of training processes


#: event hook -> (the logger method it calls, the hook arguments it passes)
LOGGER_METHODS = {
    "gendiff_train_step_end": ("log", ("step", "figures")),
    "gendiff_samples_written": ("image", ("step", "path")),
    "gendiff_checkpoint_written": ("checkpoint", ("step", "path")),
    "gendiff_run_end": ("finish", ("result",)),
}


class Events:
    """Calls the event hooks of a plugin system, each implementation on its own, and the methods
    of the run's ``loggers``."""

    def __init__(self, system=None, enabled: bool = True, loggers=()):
        self.system, self.enabled = system, enabled
        self.loggers = list(loggers) if enabled else []
        self._broken: set[tuple[str, str]] = set()

    def start(self, run: RunInfo, step: int) -> None:
        """Tell the loggers that the run begins (or resumes at ``step``)."""
        for logger in self.loggers:
            self._call_logger(logger, "start", run, step)

    def close(self) -> None:
        """Tell the loggers that the run is over (always; errors only warned about)."""
        for logger in self.loggers:
            self._call_logger(logger, "close", always=True)
        self.loggers = []

    def _call_logger(self, logger, method: str, *args: Any, always: bool = False) -> None:
        key = (f"logger {logger.name}", "")
        if key in self._broken and not always:
            return
        try:
            getattr(logger, method)(*args)
        except Exception as exc:  # noqa: BLE001 - a logger's failure must not end the run
            if key not in self._broken:
                self._broken.add(key)
                warnings.warn(f"gendiff logger '{logger.name}' failed in {method} and is switched off for the rest "
                              f"of this run: {type(exc).__name__}: {exc}", PluginRuntimeWarning, stacklevel=3)

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook`` with the arguments it asks for, then the loggers."""
        if not self.enabled:
            return
        method, names = LOGGER_METHODS.get(hook, (None, ()))
        for logger in self.loggers if method else ():
            self._call_logger(logger, method, *[kwargs[name] for name in names])
        if self.system is None:
            return
        for impl in reversed(getattr(self.system.pm.hook, hook).get_hookimpls()):  # registration order
            key = (impl.plugin_name, hook)
            if key in self._broken:
                continue
            try:
                impl.function(*[kwargs[name] for name in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - a plugin's failure must not end the run
                self._broken.add(key)
                warnings.warn(f"gendiff plugin '{impl.plugin_name}' failed in {hook} and is switched off for the "
                              f"rest of this run: {type(exc).__name__}: {exc}", PluginRuntimeWarning, stacklevel=2)
