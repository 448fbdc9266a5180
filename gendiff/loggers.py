"""Loggers: where a run's figures go besides ``metrics.jsonl`` (``[train] loggers = ["tensorboard"]``).

Each entry of ``[train] loggers`` is a registered name, or an inline table of the name and the
logger's settings, which are its constructor's arguments, checked like a component table's
(``[{ name = "tensorboard", folder = "tb" }]``).

A logger is a component of the family ``logger``, registered through ``gendiff_register_loggers``
like every other family (gendiff's own ``tensorboard`` too), so an experiment tracker is a
``pip install`` away. It receives the training events of :mod:`gendiff.events` as method calls,
on the main process only, with the failure policy of every event hook: one that raises is
reported once (:class:`~gendiff.events.PluginRuntimeWarning`) and switched off, and the run goes on.

- ``check()``: raise ``ValueError`` (why, and what to install) when it cannot work here; called
  when the recipe is validated, before training;
- ``start(run, step)``: the run begins, or resumes at ``step`` (> 0);
- ``log(step, figures)``: every ``metrics.jsonl`` line (``gendiff_train_step_end``);
- ``image(step, path)``: a PNG of samples was written (``gendiff_samples_written``);
- ``checkpoint(step, path)`` (``gendiff_checkpoint_written``);
- ``finish(result)``: the run's result with its evaluations and verdicts (``gendiff_run_end``);
- ``close()``: always last, also when training stops with an error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from .component import Component


class Logger(Component):
    """Receives a run's events (see the module docstring); every method may be left as is."""

    family: ClassVar[str] = "logger"

    def check(self) -> None:
        """Raise ``ValueError`` saying why this logger cannot work here (e.g. a missing package)."""

    def start(self, run, step: int) -> None:
        """The run ``run`` (:class:`gendiff.events.RunInfo`) begins at ``step`` (0, or a resumed step)."""

    def log(self, step: int, figures: dict[str, float]) -> None:
        """A ``metrics.jsonl`` line: step, loss, lr, grad_norm, img_per_s, time."""

    def image(self, step: int, path: Path) -> None:
        """A PNG of samples was written at ``path`` after ``step`` steps."""

    def checkpoint(self, step: int, path: Path) -> None:
        """A checkpoint was written at ``path``."""

    def finish(self, result: dict[str, Any]) -> None:
        """The run ended: ``result`` has ``trained_steps``, ``evaluations`` and ``verdicts``."""

    def close(self) -> None:
        """Release what the logger holds (files, connections); always called last."""


def numbers(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a JSON-like result, flattened to ``a/b`` keys (booleans left out)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numbers(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


class TensorBoard(Logger):
    """TensorBoard event files in ``RUN/<folder>`` (``tensorboard --logdir RUN``): the training
    figures as scalars ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/img_per_s``; every
    sample grid as the image ``samples``; the resolved recipe as text; the evaluations' numbers as
    ``eval/<metric>/<key>`` at the last step. A resumed run drops the events after its checkpoint
    (they are written again). Needs the ``tensorboard`` package: ``pip install 'gendiff[tensorboard]'``."""

    name = "tensorboard"

    def __init__(self, folder: str = "tensorboard"):
        if not isinstance(folder, str) or not folder or Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise ValueError(f"folder must be a relative folder name inside the run folder, got {folder!r}")
        self.folder = folder
        self.writer = None
        self.step = 0

    def check(self) -> None:
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"logger 'tensorboard' needs the tensorboard package ({exc}); install it with "
                             f"pip install 'gendiff[tensorboard]'") from None

    def start(self, run, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        import tomli_w

        # resumed at step s: the events written after s by the interrupted run are dropped (they come again)
        self.writer = SummaryWriter(str(Path(run.run_dir) / self.folder), purge_step=step + 1 if step else None)
        self.step = step
        if not step:
            recipe = tomli_w.dumps(run.recipe)
            self.writer.add_text("recipe", "    " + recipe.replace("\n", "\n    "), 0)  # markdown code block

    def log(self, step: int, figures: dict[str, float]) -> None:
        self.step = step
        for key, value in figures.items():
            if key not in ("step", "time"):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()

    def image(self, step: int, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self.writer.add_image("samples", pixels, step, dataformats="HWC")
        self.writer.flush()

    def finish(self, result: dict[str, Any]) -> None:
        step = int(result.get("trained_steps", self.step))
        for key, value in numbers(result.get("evaluations", {})).items():
            self.writer.add_scalar(f"eval/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


BUILTIN = [TensorBoard]


def build_loggers(entries: list, registry) -> tuple[list[Logger], list[str]]:
    """The loggers of ``[train] loggers`` (``registry``: the plugin system's logger registry),
    each made from its settings and ``check()``-ed, and every problem with its TOML path
    (``train.loggers[i]``): an unknown name, a setting the logger does not take or refuses, a
    logger that cannot work here, a logger named twice."""
    from .component import ComponentConfigError, construct

    loggers, problems, names = [], [], []
    for i, entry in enumerate(entries):
        path = f"train.loggers[{i}]"
        settings = dict(entry) if isinstance(entry, dict) else {"name": entry}
        name = settings.pop("name", None)
        if not isinstance(name, str) or not name:
            problems.append(f"{path}.name: expected the registry name of a logger (a string), got "
                            f"{'nothing' if name is None else repr(name)}")
            continue
        names.append(name)
        if name not in registry:
            problems.append(f"{path}: unknown logger {name!r}; available: {', '.join(registry.names())}")
            continue
        try:
            logger = construct(registry.get(name), "logger", settings)
            logger.check()
        except (ComponentConfigError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        loggers.append(logger)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        problems.append(f"train.loggers: {', '.join(map(repr, twice))} named twice (one logger of each name)")
    return loggers, problems
