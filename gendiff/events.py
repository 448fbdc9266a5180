"""Training events: what the trainer and ``gendiff run`` tell plugins while a run goes on.

Plugins receive events through the event hooks of :mod:`gendiff.hookspecs`
(``gendiff_train_step_end``, ``gendiff_checkpoint_written``, ``gendiff_samples_written``,
``gendiff_run_end``), on the main process only, in the order the plugins were registered. A hook
implementation takes any subset of the documented arguments. One that raises is reported once with
a :class:`PluginRuntimeWarning` naming the plugin and is not called again during this process:
a broken logger never stops a training run, and nothing already written is lost.
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


class Events:
    """Calls the event hooks of a plugin system, each implementation on its own."""

    def __init__(self, system=None, enabled: bool = True):
        self.system, self.enabled = system, enabled
        self._broken: set[tuple[str, str]] = set()

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook`` with the arguments it asks for."""
        if not self.enabled or self.system is None:
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
