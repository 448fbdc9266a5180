"""Every extension point of gendiff, in one place.

gendiff's plugin system is pluggy (the engine behind pytest). A plugin is any module or object
with functions marked ``@gendiff.hookimpl`` whose names match the specifications below. Third
parties publish one through the entry-point group ``gendiff``::

    # pyproject.toml of a plugin package
    [project.entry-points.gendiff]
    my_plugin = "my_package.plugin"

gendiff's own components are registered by :mod:`gendiff.builtin` through exactly these hooks.

Two kinds of hooks:

- *registration* hooks (``gendiff_register_<family>s``) take no arguments and return a list of
  component classes of one family. Each class has a ``name`` (the name recipes use) and
  subclasses that family's interface. The same name registered by two plugins is an error naming
  both; a class of another family is refused, naming the plugin.
- *event* hooks (``gendiff_train_step_end``, ``gendiff_checkpoint_written``,
  ``gendiff_samples_written``, ``gendiff_run_end``) are called while a run goes on
  (:mod:`gendiff.events`).

Time convention for every component: the schedule's (the paper's t in {1..T} as an integer
tensor for a discrete schedule; t in (0, 1] for a continuous one).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gendiff")
#: marks a plugin's hook implementations (``@gendiff.hookimpl``)
hookimpl = pluggy.HookimplMarker("gendiff")


@hookspec
def gendiff_register_schedules() -> list[type]:
    """Noise schedules: the forward process q(x_t | x0) (eqs. 2, 4 of the paper).

    Return subclasses of :class:`gendiff.schedules.NoiseSchedule`. A Gaussian schedule only has to
    give its betas, computed in float64::

        import math, torch, gendiff
        from gendiff.schedules import GaussianSchedule

        class Sqrt(GaussianSchedule):
            '''abar_t = 1 - sqrt(t / T + s), clipped like the cosine schedule.'''
            name = "sqrt"
            def betas(self):
                t = torch.arange(self.timesteps + 1, dtype=torch.float64) / self.timesteps
                abar = (1 - torch.sqrt(t + 1e-4)).clamp(min=1e-5)
                return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)

        @gendiff.hookimpl
        def gendiff_register_schedules():
            return [Sqrt]
    """


@hookspec
def gendiff_register_parameterizations() -> list[type]:
    """Parameterizations: what the network predicts and how it maps to x0_hat, eps and the mean.

    Return subclasses of :class:`gendiff.parameterizations.Parameterization`. A Gaussian one
    (:class:`~gendiff.parameterizations.GaussianParameterization`) gives its target and the two
    inverse maps (eqs. 4, 11, 15)::

        import gendiff
        from gendiff.parameterizations import GaussianParameterization

        class NegEps(GaussianParameterization):
            '''Predict -eps (a toy: the same model as eps, with the sign flipped).'''
            name = "neg-eps"
            def target(self, x0, noise, x_t, t, schedule):
                return -noise
            def to_eps(self, output, x_t, t, schedule):
                return -output
            def to_x0(self, output, x_t, t, schedule):
                return schedule.x0_from_eps(x_t, t, -output)

        @gendiff.hookimpl
        def gendiff_register_parameterizations():
            return [NegEps]
    """


@hookspec
def gendiff_register_variances() -> list[type]:
    """Variances: the spread (more generally, the distribution) of the reverse transition.

    Return subclasses of :class:`gendiff.variances.Variance`. ``out_channels`` says how many extra
    network outputs it needs; ``log_variance`` gives log sigma_t^2 (Sec. 3.2)::

        import gendiff, torch
        from gendiff.variances import Variance

        class GeometricMean(Variance):
            '''sigma_t^2 = sqrt(beta_t * beta~_t), between the paper's two fixed choices.'''
            name = "geometric"
            def log_variance(self, var_output, x_t, t, schedule):
                lv = 0.5 * (schedule.at("log_beta", t, x_t) + schedule.at("log_posterior_variance", t, x_t))
                return lv.expand_as(x_t)

        @gendiff.hookimpl
        def gendiff_register_variances():
            return [GeometricMean]
    """


@hookspec
def gendiff_register_weightings() -> list[type]:
    """Loss weightings: how the per-timestep training loss is formed (eqs. 8, 12, 14).

    Return subclasses of :class:`gendiff.weightings.LossWeighting`. ``loss`` receives a
    :class:`gendiff.weightings.LossTerms` with lazily computed pieces and returns a per-example
    loss::

        import gendiff
        from gendiff.weightings import LossWeighting

        class Truncated(LossWeighting):
            '''L_simple (eq. 14) only for t <= 500.'''
            name = "truncated"
            def loss(self, terms):
                return terms.mse() * (terms.t <= 500)

        @gendiff.hookimpl
        def gendiff_register_weightings():
            return [Truncated]
    """


@hookspec
def gendiff_register_backbones() -> list[type]:
    """Backbones: the neural network, an ``nn.Module`` called as ``net(x, t)`` (``t``: the
    schedule's network time), or ``net(x, t, cond)`` in a conditional recipe.

    Return subclasses of :class:`gendiff.backbones.Backbone`. gendiff constructs it with the
    keyword arguments ``in_channels``, ``out_channels`` and ``image_size`` (decided by the other
    components and the data) plus the recipe's ``[backbone]`` table; a backbone that declares
    ``provides = frozenset({"class-labels"})`` also gets ``num_classes`` and the labels::

        import gendiff, torch
        from gendiff.backbones import Backbone

        class Linear(Backbone):
            '''A per-pixel linear map plus a time offset: a smoke-test backbone.'''
            name = "linear"
            def __init__(self, in_channels, out_channels, image_size):
                super().__init__()
                self.proj = torch.nn.Conv2d(in_channels, out_channels, 1)
            def forward(self, x, t):
                return self.proj(x) + t.to(x.dtype).view(-1, 1, 1, 1) / 1000

        @gendiff.hookimpl
        def gendiff_register_backbones():
            return [Linear]
    """


@hookspec
def gendiff_register_samplers() -> list[type]:
    """Samplers: turn a composed model into samples (Algorithm 2 and its successors).

    Return subclasses of :class:`gendiff.samplers.Sampler`. A sampler receives the whole
    composed model, so it can call it as often per step as its solver needs (for a conditional
    model, a view whose predictions are already conditioned and guided)::

        import gendiff, torch
        from gendiff.samplers import Sampler

        class MeanOnly(Sampler):
            '''Algorithm 2 without noise: follow the reverse means.'''
            name = "mean-only"
            def sample(self, model, shape, generator=None, progress=None):
                x = model.prior_sample(shape, generator=generator)
                for t in range(model.timesteps, 0, -1):
                    x = model.p_transition(x, model.time(t, shape[0], x.device)).mean
                return x

        @gendiff.hookimpl
        def gendiff_register_samplers():
            return [MeanOnly]
    """


@hookspec
def gendiff_register_time_samplers() -> list[type]:
    """Time samplers: how Algorithm 1 draws t for each training example.

    Return subclasses of :class:`gendiff.time_samplers.TimeSampler`. ``sample`` returns the times
    and importance weights (or None); ``update`` sees every step's global batch; the state in
    ``state_dict`` is saved in every checkpoint, so a resumed run draws the same times::

        import gendiff, torch
        from gendiff.time_samplers import TimeSampler

        class Stratified(TimeSampler):
            '''One t per stratum: the batch's times cover {1..T} evenly (lower variance than
            independent uniform draws; every t is still equally likely, so no weights).'''
            name = "stratified"
            requires = {"schedule": frozenset({"discrete-time"})}
            def sample(self, batch, schedule, generator=None, device=None):
                T = schedule.timesteps
                u = (torch.arange(batch) + torch.rand(batch, generator=generator)) / batch
                return (u * T).long().clamp(0, T - 1).to(device) + 1, None

        @gendiff.hookimpl
        def gendiff_register_time_samplers():
            return [Stratified]
    """


@hookspec
def gendiff_register_datasets() -> list[type]:
    """Datasets: discrete images with a known number of levels K.

    Return subclasses of :class:`gendiff.datasets.Dataset`. A dataset states its ``shape``
    (C, H, W) and ``levels`` (K) without loading anything, and ``load(split)`` returns uint8
    integers in {0..K-1} shaped (N, C, H, W). One with classes sets ``num_classes`` and gives
    ``labels(split)``; one too large for memory overrides ``open(split)`` to return a
    :class:`gendiff.datasets.Source` that reads batches from disk::

        import gendiff, torch
        from gendiff.datasets import Dataset

        class Checkers(Dataset):
            '''Two 4x4 binary checkerboards, K = 2.'''
            name = "checkers"
            shape = (1, 4, 4)
            levels = 2
            def load(self, split="train"):
                self.check_split(split)
                board = (torch.arange(4)[:, None] + torch.arange(4)) % 2
                return torch.stack([board, 1 - board])[:, None].to(torch.uint8)

        @gendiff.hookimpl
        def gendiff_register_datasets():
            return [Checkers]
    """


# -- metrics ----------------------------------------------------------------------------------
@hookspec
def gendiff_register_metrics() -> list[type]:
    """Metrics: evaluations of a trained model, usable in ``[eval] metrics`` and as
    ``gendiff eval NAME RUN``; each result is written to ``RUN/eval/NAME.json``.

    Return subclasses of :class:`gendiff.evaluation.Metric`. ``evaluate(context)`` returns a
    JSON-serialisable dict from an :class:`gendiff.evaluation.EvalContext` (the EMA model, the
    dataset, the recipe, the run folder, and ``context.samples(n)``); ``check(model, dataset)``
    raises ``ValueError`` before training if the metric cannot apply::

        import gendiff, numpy as np
        from gendiff.evaluation import Metric

        class MeanBrightness(Metric):
            '''The mean pixel of 16 samples against the test split's, on 0..255.'''
            name = "brightness"
            def evaluate(self, context):
                samples = context.samples(16)
                test = context.dataset.load("test").double() * 255 / (context.dataset.levels - 1)
                return {"samples": float(samples.mean()), "test": float(test.mean()),
                        "difference": float(abs(samples.mean() - test.mean()))}

        @gendiff.hookimpl
        def gendiff_register_metrics():
            return [MeanBrightness]
    """


# -- loggers ----------------------------------------------------------------------------------
@hookspec
def gendiff_register_loggers() -> list[type]:
    """Loggers: experiment trackers that receive a run's events, named in ``[train] loggers``
    (gendiff's own: ``tensorboard``).

    Return subclasses of :class:`gendiff.loggers.Logger`; override any of ``check()`` (raise
    ``ValueError`` when a needed package is missing), ``start(run, step)``, ``log(step, figures)``,
    ``image(step, path)``, ``checkpoint(step, path)``, ``finish(result)`` and ``close()``. They are
    called on the main process only; one that raises is switched off with a warning, and the run
    goes on::

        import csv
        import gendiff
        from gendiff.loggers import Logger

        class CSVLoss(Logger):
            '''The loss of every logged step in RUN/loss.csv.'''
            name = "csv-loss"
            def start(self, run, step):
                self.file = open(run.run_dir / "loss.csv", "a", newline="")
                self.rows = csv.writer(self.file)
            def log(self, step, figures):
                self.rows.writerow([step, figures["loss"]])
            def close(self):
                self.file.close()

        @gendiff.hookimpl
        def gendiff_register_loggers():
            return [CSVLoss]
    """


# -- training events --------------------------------------------------------------------------
# Called on the main process while a run goes on (see gendiff.events). An implementation takes any
# subset of the arguments; one that raises is reported and switched off, and the run goes on.


@hookspec
def gendiff_train_step_end(run, step: int, figures: dict) -> None:
    """After every step that writes a line to ``metrics.jsonl`` (every ``train.log_every`` steps
    and the last): ``figures`` is that line (step, loss, lr, grad_norm, img_per_s, time); ``run``
    a :class:`gendiff.events.RunInfo`. A logger plugin::

        import json, gendiff

        @gendiff.hookimpl
        def gendiff_train_step_end(run, step, figures):
            with open(run.run_dir / "my-log.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, "loss": figures["loss"]}) + "\\n")
    """


@hookspec
def gendiff_checkpoint_written(run, step: int, path) -> None:
    """After checkpoint ``path`` (``RUN/checkpoints/step-N``) is complete on disk::

        import gendiff

        @gendiff.hookimpl
        def gendiff_checkpoint_written(run, step, path):
            (run.run_dir / "latest.txt").write_text(f"{step} {path.name}\\n")
    """


@hookspec
def gendiff_samples_written(run, step: int, path) -> None:
    """After a picture of samples is written: the grids during training (``RUN/samples/step-N.png``,
    EMA weights) and the final samples' grid (``RUN/samples/final.png``)::

        import gendiff

        @gendiff.hookimpl
        def gendiff_samples_written(run, step, path):
            with open(run.run_dir / "pictures.txt", "a") as fh:
                fh.write(f"{step} {path}\\n")
    """


@hookspec
def gendiff_run_end(run, result: dict) -> None:
    """When ``gendiff run`` has trained, sampled and evaluated: ``result`` is its summary (steps,
    seconds, images per second, and ``evaluations``, each metric's result or its error)::

        import json, gendiff

        @gendiff.hookimpl
        def gendiff_run_end(run, result):
            (run.run_dir / "summary.json").write_text(json.dumps(result, default=str))
    """
