"""Small composed models for the suites and for plugin authors' tests: the ``tiny-conv`` backbone,
a plugin system that registers components under test, :func:`tiny_model` and :func:`eval_context`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backbones import Backbone
from ..hookspecs import hookimpl


class TinyConv(Backbone):
    """A one-layer time-conditioned convolution: the fast backbone of the suites and tests."""

    name = "tiny-conv"

    def __init__(self, in_channels: int, out_channels: int, image_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        tmap = (t.to(x.dtype) / 1000.0).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.conv(torch.cat([x, tmap], 1))


class _TestingPlugin:
    """Registers :class:`TinyConv`, and the classes of components under test, through the public
    hooks like any plugin."""

    def __init__(self, extra: dict[str, list[type]]):
        self.extra = extra

    @hookimpl
    def gendiff_register_backbones(self):
        return [TinyConv]

    @hookimpl
    def gendiff_register_parameterizations(self):
        return self.extra.get("parameterization", [])

    @hookimpl
    def gendiff_register_variances(self):
        return self.extra.get("variance", [])

    @hookimpl
    def gendiff_register_weightings(self):
        return self.extra.get("weighting", [])

    @hookimpl
    def gendiff_register_samplers(self):
        return self.extra.get("sampler", [])


def testing_plugin_system(extra: dict[str, list[type]] | None = None):
    """The installed plugins plus the testing backbone ``tiny-conv`` and ``extra`` classes
    (``{family: [classes]}``) that are not registered yet."""
    from ..plugins import create_plugin_system

    return create_plugin_system(extra_plugins=[("gendiff.testing", _TestingPlugin(extra or {}))])


def tiny_model(weighting="simple", variance="fixed-large", parameterization="eps", sampler="ancestral",
               timesteps: int = 50, seed: int = 0, process: str = "gaussian", schedule=None, time_sampler=None):
    """A small composed model with the ``tiny-conv`` backbone on 2x4x4 data: a linear schedule
    with ``timesteps`` steps and K = 256 (``process = "gaussian"``), or a raster masking schedule
    (T = D = 32) with K = 4 (``process = "masking"``; pass x0-logits, categorical, vlb).

    ``weighting``, ``variance``, ``parameterization`` and ``sampler`` are registry names or
    instances; an instance (a plugin's component under test) is used as it is, its class
    registered for the occasion if it is not installed. ``schedule`` and ``time_sampler`` (a
    registry name, a table such as ``{"name": "vdm-learned", "features": 8}``, or None for the
    defaults above) choose those families too, e.g. a learned schedule for a weighting that trains it."""
    from ..builder import build
    from ..plugins import plugin_system

    chosen = {"parameterization": parameterization, "variance": variance, "weighting": weighting, "sampler": sampler}
    installed = plugin_system()
    extra = {
        family: [type(value)]
        for family, value in chosen.items()
        if not isinstance(value, str) and value.name not in installed.registry(family)
    }
    recipe = {
        family: {"name": value} if isinstance(value, str) else {"name": value.name, **type(value).example_args}
        for family, value in chosen.items()
    }
    if isinstance(schedule, str):
        schedule = {"name": schedule, "timesteps": timesteps}
    if isinstance(time_sampler, str):
        time_sampler = {"name": time_sampler}
    if time_sampler is not None:
        recipe["time_sampler"] = dict(time_sampler)
    recipe.update(
        schedule=dict(schedule) if schedule is not None else
        {"name": "linear", "timesteps": timesteps} if process == "gaussian" else {"name": "masking"},
        backbone={"name": "tiny-conv"},
        data={"shape": [2, 4, 4], "levels": 256 if process == "gaussian" else 4},
    )
    torch.manual_seed(seed)
    model = build(recipe, plugins=testing_plugin_system(extra))
    for family, value in chosen.items():
        if not isinstance(value, str):
            setattr(model, family, value)  # keep the instance's own arguments
    return model


def eval_context(run_dir=None, seed: int = 0):
    """An :class:`~gendiff.evaluation.EvalContext` for a small untrained digits model (T = 20,
    ``eval.samples`` 16, ``eval.fid_samples`` 32, ``eval.nll_examples`` 16) in ``run_dir`` (a new
    temporary folder by default): enough for a metric to run end to end in seconds."""
    import tempfile
    from pathlib import Path

    from ..builder import build
    from ..evaluation.inputs import eval_context as make
    from ..recipe import parse_recipe

    recipe = {"schedule": {"name": "linear", "timesteps": 20}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"},
              "sampler": {"name": "ancestral"}, "data": {"name": "digits"},
              "backbone": {"name": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                           "attn_resolutions": [4], "dropout": 0.0, "norm_groups": 8},
              "eval": {"samples": 16, "fid_samples": 32, "nll_examples": 16}}
    torch.manual_seed(seed)
    model = build(recipe).eval()
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="gendiff-metric-"))
    checkpoint = run_dir / "checkpoints" / "step-0"
    return make(model, parse_recipe(recipe), run_dir, checkpoint, progress=False)
