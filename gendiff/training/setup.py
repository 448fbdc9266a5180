"""Everything a run needs, decided before any work starts: the recipe loaded, overridden,
validated and built into a model initialised from ``train.seed`` (:func:`prepare`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..diffusion import Diffusion
from ..errors import TrainingError
from ..recipe import Recipe, apply_overrides, dumps, load_recipe, parse_recipe, resolve


@dataclass
class RunSetup:
    """A validated recipe, its model, its resolved form (written into the run) and its dataset."""

    model: Diffusion
    spec: Recipe
    resolved: dict[str, Any]
    dataset: Any
    plugins: Any = None  #: the plugin system the recipe was built with (its event hooks are called)

    @property
    def recipe_text(self) -> str:
        return dumps(self.resolved)


def prepare(source, overrides: Sequence[str] = (), plugins=None) -> RunSetup:
    """Load, override, validate and build a recipe; weights are initialised from train.seed."""
    from ..builder import build
    from ..evaluation import check_metrics
    from ..plugins import plugin_system

    system = plugins or plugin_system()
    raw, name = load_recipe(source)
    spec = parse_recipe(raw, name, problems=apply_overrides(raw, overrides))
    if spec.data.name is None:
        raise TrainingError(
            f"the recipe{' ' + name if name else ''} has no dataset: set [data] name (e.g. \"digits\") to train."
        )
    torch.manual_seed(spec.train.seed)
    model = build(raw, plugins=system)
    check_metrics(spec, model, system)
    check_loggers(spec, system)
    _check_sample_memory(spec, model)
    objects = {table: getattr(model, table) for table in spec.components}
    return RunSetup(model, spec, resolve(spec, objects, model.dataset, system), model.dataset, system)


def check_loggers(spec: Recipe, system) -> None:
    """Refuse unknown loggers, settings they do not take, and loggers that cannot work here (a
    missing package), by path."""
    from ..errors import RecipeError
    from ..loggers import build_loggers

    _, problems = build_loggers(spec.train.loggers, system.registry("logger"))
    if problems:
        raise RecipeError(problems, spec.source)


def _check_sample_memory(spec: Recipe, model: Diffusion) -> None:
    """Refuse an [eval] whose samples could not be held in memory (they are kept as float32)."""
    from ..builder import memory_bytes

    ev = spec.eval
    wanted = [("eval.samples", ev.samples)] + ([("eval.fid_samples", ev.fid_samples)] if "fid" in ev.metrics else [])
    if spec.train.sample_every:
        wanted.append(("train.sample_grid", spec.train.sample_grid))
    key, n = max(wanted, key=lambda kv: kv[1])
    need, have = n * math.prod(model.data_shape) * 5, memory_bytes()  # float32 + the uint8 copy written out
    if have and need > have // 2:
        raise TrainingError(
            f"{key} = {n:,} samples of shape {tuple(model.data_shape)} need about {need / 2**30:,.1f} GiB, more "
            f"than half of this machine's {have / 2**30:,.1f} GiB; ask for fewer."
        )
