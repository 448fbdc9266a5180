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
    check_trainable(spec, model)
    check_metrics(spec, model, system)
    check_loggers(spec, system)
    _check_sample_memory(spec, model)
    objects = {table: getattr(model, table) for table in spec.components}
    return RunSetup(model, spec, resolve(spec, objects, model.dataset, system), model.dataset, system)


def check_trainable(spec: Recipe, model: Diffusion) -> None:
    """Refuse a learning rate for a family whose component has no parameters, and a trainable
    component that the recipe's loss gives no gradient (one backward pass on a small blank batch,
    only when a component other than the backbone has parameters)."""
    from ..errors import RecipeError

    trainable = model.trainable()
    problems = [f"{family}.lr: {family} '{model.components()[family].name}' has no parameters to optimise; remove "
                f"{family}.lr" for family in spec.lrs if family not in trainable]
    if problems:
        raise RecipeError(problems, spec.source)
    others = {f: m for f, m in trainable.items() if f != "backbone"}
    if not others:
        return
    x0 = torch.zeros((2, *model.data_shape))
    labels = torch.zeros(2, dtype=torch.long) if model.conditioning.active else None
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        terms = model.loss_terms(x0, generator=torch.Generator().manual_seed(0), cond=labels)
        loss, losses = model.objective(terms)
        loss.backward()
        model.after_backward(losses.detach())
        dead = [f"{family} '{m.name}'" for family, m in others.items()
                if all(p.grad is None or not bool(p.grad.abs().sum() > 0) for p in m.parameters())]
    finally:
        model.zero_grad(set_to_none=True)
    if dead:
        raise TrainingError(
            f"{', '.join(dead)} {'has' if len(dead) == 1 else 'have'} parameters, but the training loss of weighting "
            f"'{model.weighting.name}' gives them no gradient, so they would never learn. Choose a weighting that "
            f"trains them (e.g. vdm for a learned schedule) or a component without parameters."
        )


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
