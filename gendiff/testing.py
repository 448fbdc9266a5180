"""Conformance suites, one per component family, for gendiff's own components and for plugins.

Each ``check_<family>`` function builds what it needs, runs the family's contract (shapes,
dtypes, float64 agreement, the family's invariants) and raises ``AssertionError`` with a message
saying what broke. A plugin author runs them from pytest::

    from gendiff.testing import check_schedule
    from my_plugin import MySchedule

    def test_my_schedule_conforms():
        check_schedule(MySchedule())

Components that need constructor arguments give a small working set as the class attribute
``example_args`` (used by :func:`example_instance`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .backbones import Backbone
from .component import construct
from .plugins import hookimpl

__all__ = [
    "example_instance",
    "check_schedule",
    "check_parameterization",
    "check_variance",
    "check_weighting",
    "check_backbone",
    "check_sampler",
    "check_dataset",
    "check_time_sampler",
    "check_metric",
    "eval_context",
    "tiny_model",
    "testing_plugin_system",
    "TinyConv",
]


def example_instance(cls: type, **context: Any):
    """An instance of ``cls`` built from its ``example_args`` (or its defaults)."""
    return construct(cls, getattr(cls, "family", "component"), dict(getattr(cls, "example_args", {})), **context)


def _close(a: Tensor, b: Tensor, what: str, rtol=1e-5, atol=1e-6) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    ok = torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)
    assert ok, f"{what}: max difference {(a.double() - b.double()).abs().max().item():.3g}"


def _batch(dtype=torch.float64, shape=(6, 2, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1)
    noise = torch.randn(shape, generator=g, dtype=dtype)
    return x0, noise, g


def _times(schedule, n: int) -> Tensor:
    """n of the schedule's grid times, spread over steps {1..T} and always including steps 1, 2
    and T, in the schedule's convention (integers, or i / T for a continuous schedule)."""
    T = schedule.timesteps
    steps = torch.linspace(1, T, n).round().long()
    steps[0], steps[1], steps[-1] = 1, min(2, T), T
    return torch.stack([schedule.times(int(i), 1)[0] for i in steps])


# -- schedules ---------------------------------------------------------------------------------
def check_schedule(schedule, data_shape=(2, 4, 4), levels: int = 256) -> None:
    """The forward-process contract: q_sample shapes/dtypes, a proper prior, a non-negative
    L_T; for Gaussian schedules, float64 tables with 0 < abar_T < ... < abar_1 < abar_0 = 1
    and the noise-free consistency of eq. 7: mu~_t(sqrt(abar_t) x0, x0) = sqrt(abar_{t-1}) x0;
    for masking schedules, x_T blank, k(t) coordinates masked at t, and the reveal
    probabilities of step t summing to the number revealed."""
    schedule.bind(tuple(data_shape), levels)
    T = schedule.timesteps
    assert isinstance(T, int) and T >= 1, f"timesteps must be a positive int, got {T!r}"
    x0, noise, g = _batch()
    t = _times(schedule, x0.shape[0])
    _check_time(schedule)
    for dtype in (torch.float32, torch.float64):
        xt = schedule.q_sample(x0.to(dtype), t, schedule.noise_like(x0.to(dtype), g))
        assert xt.shape == x0.shape and xt.dtype == dtype, "q_sample must keep shape and dtype"
        assert torch.isfinite(xt).all(), "q_sample produced non-finite values"
    prior = schedule.prior_sample((3, 2, 4, 4), generator=g, dtype=torch.float64)
    assert prior.shape == (3, 2, 4, 4), "prior_sample must return the asked-for shape"
    lt = schedule.prior_kl(x0)
    assert lt.shape == x0.shape and bool((lt >= -1e-12).all()), "prior_kl (L_T) must be >= 0 per element"
    model_in = schedule.model_input(x0, t)
    assert model_in.shape[1] == x0.shape[1] + schedule.extra_input_channels, (
        "model_input must add exactly extra_input_channels channels"
    )
    if "masking" in schedule.provides:
        _check_masking(schedule, x0, g)
    if "gaussian" not in schedule.provides:
        return
    tables = schedule.tables
    for name, value in tables.items():
        assert value.dtype == torch.float64, f"table {name} must be float64"
        assert value.shape == (T + 1,), f"table {name} must have T + 1 entries (index = paper t)"
    abar = tables["abar"]
    assert abar[0] == 1.0, "abar_0 must be 1"
    assert bool((abar[1:] < abar[:-1]).all()) and abar[-1] > 0, "abar_t must decrease strictly and stay > 0"
    _close(abar[1:], torch.cumprod(1 - tables["beta"][1:], 0), "abar_t = prod(1 - beta_s)", rtol=1e-12)
    mean32 = schedule.posterior_mean(x0.float(), schedule.q_sample(x0.float(), t, torch.zeros_like(x0.float())), t)
    mean64 = schedule.posterior_mean(x0, schedule.q_sample(x0, t, torch.zeros_like(x0)), t)
    expect = schedule.at("abar_prev", t, x0).sqrt() * x0
    _close(mean64, expect, "eq. 7 with noise-free x_t", rtol=1e-10, atol=1e-12)
    _close(mean32, mean64, "float32 vs float64 posterior mean", rtol=1e-4, atol=1e-5)


def _check_time(schedule) -> None:
    """The time contract: grid times in the schedule's convention, uniform draws inside its range,
    fractional times refused by a discrete schedule; for Gaussian schedules a log-SNR that falls
    with t, agrees with the tables on the grid and is inverted by ``time_from_log_snr``."""
    from .schedules import TimeError

    T, g = schedule.timesteps, torch.Generator().manual_seed(0)
    last = schedule.times(T, 3)
    assert last.shape == (3,) and last.is_floating_point() == schedule.continuous, "times(): the time's dtype"
    draws = schedule.uniform_time(4096, g)
    if schedule.continuous:
        assert draws.dtype == torch.float64 and bool(((draws > 0) & (draws <= 1)).all()), "draws must lie in (0, 1]"
        assert float(last[0]) == 1.0, "grid step T must be t = 1"
    else:
        assert not draws.is_floating_point() and int(draws.min()) == 1 and int(draws.max()) == T, "draws: 1..T"
        try:
            schedule.q_sample(torch.zeros(1, 2, 4, 4), torch.tensor([1.5]), torch.zeros(1, 2, 4, 4))
        except TimeError:
            pass
        else:
            raise AssertionError("a discrete schedule must refuse a fractional time, not truncate it")
    if "gaussian" not in schedule.provides:
        return
    steps = torch.arange(1, T + 1)
    grid = torch.stack([schedule.times(int(i), 1)[0] for i in steps])
    lam = schedule.log_snr(grid)
    assert lam.dtype == torch.float64 and bool((lam[1:] < lam[:-1]).all()), "log-SNR must fall with t"
    _close(lam, schedule.tables["log_snr"][1:], "log-SNR on the grid vs the tables", rtol=1e-9, atol=1e-9)
    alpha, sigma = schedule.alpha_sigma(grid)
    _close(alpha**2 + sigma**2, torch.ones_like(alpha), "alpha_t^2 + sigma_t^2 = 1 (variance preserving)")
    _close(schedule.snr(grid), alpha**2 / sigma**2, "SNR = alpha^2 / sigma^2", rtol=1e-9)
    back = schedule.time_from_log_snr(lam)
    _close(back.double(), grid.double(), "time_from_log_snr inverts log_snr on the grid", rtol=1e-7, atol=1e-9)
    if schedule.continuous:
        between = (grid[:-1] + grid[1:]) / 2
        lam_between = schedule.log_snr(between)
        assert bool(((lam_between < lam[:-1]) & (lam_between > lam[1:])).all()), "log-SNR between grid times"
        _close(schedule.time_from_log_snr(lam_between), between, "time_from_log_snr between grid times",
               rtol=1e-7, atol=1e-9)


def _check_masking(schedule, x0, g) -> None:
    from .distributions import is_masked

    T, D = schedule.timesteps, x0[0].numel()
    ranks = schedule.noise_like(x0, g)
    assert sorted(ranks[0].flatten().tolist()) == list(range(1, D + 1)), "ranks must be a permutation of 1..D"
    previous = torch.zeros(x0.shape[0])
    for t in range(1, T + 1):
        tt = torch.full((x0.shape[0],), t)
        x_t = schedule.q_sample(x0, tt, ranks)
        masked = is_masked(x_t).flatten(1).sum(1).double()
        assert bool((masked > previous).all()), "every step must mask more coordinates"
        kept = ~is_masked(x_t)
        assert torch.equal(x_t[kept], x0[kept]), "unmasked coordinates must be x0's"
        revealed = schedule.reveal_weights(x_t, tt).flatten(1).sum(1)
        assert torch.allclose(revealed, masked - previous), "step t must reveal what step t masked"
        previous = masked
    assert bool((previous == D).all()), "x_T must be the blank image"


# -- parameterizations -------------------------------------------------------------------------
def check_parameterization(param, schedule=None) -> None:
    """Gaussian ("regression") parameterizations: the network output equal to the target must
    give back x0, eps and the posterior mean mu~_t(x_t, x0) exactly (float64), and float32 must
    agree with float64. Logit parameterizations: logits of the right shape, x0_hat in [-1, 1],
    the revealed coordinates of x_t kept."""
    if "logits" in param.provides:
        return _check_logits_parameterization(param)
    from .schedules import LinearSchedule

    schedule = schedule or LinearSchedule()
    x0, noise, _ = _batch()
    assert param.out_channels(x0.shape[1], 256) >= 1, "out_channels must be positive"
    t = _times(schedule, x0.shape[0])
    xt = schedule.q_sample(x0, t, noise)
    target = param.target(x0, noise, xt, t, schedule)
    assert target.shape == x0.shape, "target must be shaped like x0"
    pred = param.predict(target, xt, t, schedule)
    _close(pred.x0, x0, f"{param.name}: x0 round trip", rtol=1e-6, atol=1e-6)
    _close(pred.eps, noise, f"{param.name}: eps round trip", rtol=1e-6, atol=1e-6)
    _close(pred.mean, schedule.posterior_mean(x0, xt, t), f"{param.name}: mean = mu~_t(x_t, x0)", rtol=1e-6, atol=1e-8)
    pred32 = param.predict(target.float(), xt.float(), t, schedule)
    assert pred32.mean.dtype == torch.float32, "predict must keep the dtype"
    _close(pred32.mean, pred.mean, f"{param.name}: float32 vs float64 mean", rtol=1e-3, atol=1e-4)
    clipped = param.predict(target * 50, xt, t, schedule, clip_x0=True)
    assert clipped.x0.abs().max() <= 1.0, "clip_x0 must clip x0_hat to [-1, 1]"
    _close(clipped.eps, schedule.eps_from_x0(xt, t, clipped.x0), "clipped eps = eps(x_t, clip(x0_hat))")
    unclipped = param.predict(target * 50, xt, t, schedule)
    # the mean follows the clipped x0_hat (eq. 7), or, for a parameterization that predicts the
    # mean itself, stays the network's own (the official code's mu convention)
    from_x0 = torch.allclose(clipped.mean, schedule.posterior_mean(clipped.x0, xt, t), rtol=1e-5, atol=1e-6)
    own = torch.allclose(clipped.mean, unclipped.mean, rtol=1e-5, atol=1e-6)
    assert from_x0 or own, "clipped mean must be mu~_t(x_t, clip(x0_hat)) or the network's own mean"


def _masked_batch(levels: int = 4, order: str = "raster", t: int = 5):
    from .schedules import MaskingSchedule

    schedule = MaskingSchedule(order=order)
    schedule.bind((2, 4, 4), levels)
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, levels, (6, 2, 4, 4), generator=g)
    x0 = k.double() * 2 / (levels - 1) - 1
    tt = torch.full((6,), t)
    x_t = schedule.q_sample(x0, tt, schedule.noise_like(x0, g))
    return schedule, x0, x_t, tt, g


def _check_logits_parameterization(param) -> None:
    from .distributions import is_masked

    levels = 4
    schedule, x0, x_t, t, g = _masked_batch(levels)
    out_ch = param.out_channels(2, levels)
    output = torch.randn((6, out_ch, 4, 4), generator=g, dtype=torch.float64)
    pred = param.predict(output, x_t, t, schedule)
    assert pred.logits is not None and pred.logits.shape[:2] == (6, 2) and pred.logits.shape[2] == levels
    assert pred.x0.shape == x0.shape and bool((pred.x0.abs() <= 1 + 1e-9).all()), "x0_hat must lie in [-1, 1]"
    kept = ~is_masked(x_t)
    assert torch.equal(pred.x0[kept], x_t[kept]), "revealed coordinates must be kept"


# -- variances -----------------------------------------------------------------------------------
def check_variance(variance, schedule=None) -> None:
    """The reverse transition keeps the predicted mean, has a finite positive variance of the
    data's shape, float32 agrees with float64, and a fixed variance lies between beta~_t and
    beta_t for t >= 2 (the paper's two extremes)."""
    if "categorical" in variance.provides:
        return _check_categorical(variance)
    from .parameterizations import EpsParameterization
    from .schedules import LinearSchedule

    schedule = schedule or LinearSchedule()
    x0, noise, g = _batch()
    t = _times(schedule, x0.shape[0])
    xt = schedule.q_sample(x0, t, noise)
    extra = variance.out_channels(x0.shape[1])
    assert isinstance(extra, int) and extra >= 0, "out_channels must be a non-negative int"
    var_out = torch.rand((x0.shape[0], extra, *x0.shape[2:]), generator=g, dtype=x0.dtype) * 2 - 1 if extra else None
    pred = EpsParameterization().predict(noise, xt, t, schedule)
    p = variance.transition(pred, var_out, xt, t, schedule)
    _close(p.mean, pred.mean, "the transition's mean must be the predicted mean")
    var = p.variance
    assert var.shape == x0.shape and bool(torch.isfinite(var).all()) and bool((var > 0).all()), (
        "variance must be finite and positive"
    )
    if extra == 0:  # a fixed choice lies between the paper's two extremes (t >= 2)
        later = t >= 2
        lo = schedule.at("log_posterior_variance", t, xt).exp()[later]
        hi = schedule.at("log_beta", t, xt).exp()[later]
        v = var[later]
        assert bool((v >= lo * (1 - 1e-9)).all() & (v <= hi * (1 + 1e-9)).all()), (
            "a fixed sigma_t^2 must lie between beta~_t and beta_t for t >= 2 (Sec. 3.2)"
        )
    p32 = variance.transition(
        pred.__class__(pred.x0.float(), pred.eps.float(), pred.mean.float()),
        None if var_out is None else var_out.float(), xt.float(), t, schedule,
    )
    _close(p32.variance, var, "float32 vs float64 variance", rtol=1e-4, atol=1e-9)


def _check_categorical(variance) -> None:
    """A masking reverse step reveals exactly the chosen coordinates, keeps the rest, and its
    cross-entropies are finite and non-negative."""
    from .distributions import is_masked
    from .parameterizations import X0Logits

    levels = 4
    for order in ("raster", "agnostic"):
        schedule, x0, x_t, t, g = _masked_batch(levels, order)
        output = torch.randn((6, 2 * levels, 4, 4), generator=g, dtype=torch.float64)
        p = variance.transition(X0Logits().predict(output, x_t, t, schedule), None, x_t, t, schedule)
        x_prev = p.sample(g)
        kept = ~is_masked(x_t)
        assert torch.equal(x_prev[kept], x_t[kept]), "revealed coordinates must stay"
        newly = (is_masked(x_t) & ~is_masked(x_prev)).flatten(1).sum(1).double()
        expect = schedule.reveal_weights(x_t, t).flatten(1).sum(1)
        assert torch.allclose(newly, expect), "a step must reveal as many coordinates as q does"
        ce = p.ce(x0)
        assert bool(torch.isfinite(ce).all() & (ce >= 0).all()), "cross-entropies must be finite and >= 0"


# -- weightings ----------------------------------------------------------------------------------
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
    from .plugins import create_plugin_system

    return create_plugin_system(extra_plugins=[("gendiff.testing", _TestingPlugin(extra or {}))])


def tiny_model(weighting="simple", variance="fixed-large", parameterization="eps", sampler="ancestral",
               timesteps: int = 50, seed: int = 0, process: str = "gaussian"):
    """A small composed model with the ``tiny-conv`` backbone on 2x4x4 data: a linear schedule
    with ``timesteps`` steps and K = 256 (``process = "gaussian"``), or a raster masking schedule
    (T = D = 32) with K = 4 (``process = "masking"``; pass x0-logits, categorical, vlb).

    ``weighting``, ``variance``, ``parameterization`` and ``sampler`` are registry names or
    instances; an instance (a plugin's component under test) is used as it is, its class
    registered for the occasion if it is not installed."""
    from .builder import build
    from .plugins import plugin_system

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
    recipe.update(
        schedule={"name": "linear", "timesteps": timesteps} if process == "gaussian" else {"name": "masking"},
        backbone={"name": "tiny-conv"},
        data={"shape": [2, 4, 4], "levels": 256 if process == "gaussian" else 4},
    )
    torch.manual_seed(seed)
    model = build(recipe, plugins=testing_plugin_system(extra))
    for family, value in chosen.items():
        if not isinstance(value, str):
            setattr(model, family, value)  # keep the instance's own arguments
    return model


def check_weighting(weighting) -> None:
    """A weighting returns one finite loss per example, and its gradient reaches the network."""
    needs = weighting.requires.get("variance", ())
    if "categorical" in needs:
        model = tiny_model(weighting, "categorical", "x0-logits", process="masking")
    else:
        model = tiny_model(weighting, variance="learned-range" if "learned" in needs else "fixed-large")
    x0, _, g = _batch(torch.float32, (8, 2, 4, 4))
    levels = model.levels  # put the data on the model's K levels
    x0 = torch.round((x0 + 1) * (levels - 1) / 2) * 2 / (levels - 1) - 1
    terms = model.loss_terms(x0, generator=g)
    loss = weighting.loss(terms)
    assert loss.shape == (8,), f"loss must have one value per example, got shape {tuple(loss.shape)}"
    assert bool(torch.isfinite(loss).all()), "loss must be finite"
    loss.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(gr).all()) for gr in grads), "gradients must be finite"
    assert any(bool(gr.abs().sum() > 0) for gr in grads), "the loss must train the network"


# -- backbones -----------------------------------------------------------------------------------
def check_backbone(cls: type, image_size: int = 8) -> None:
    """A backbone returns (B, out_channels, H, W) for several channel configurations, keeps
    examples independent of each other, and depends on both x and t (after random weights)."""
    for cin, cout in ((1, 1), (3, 6), (2, 3)):
        net = example_instance(cls, in_channels=cin, out_channels=cout, image_size=image_size)
        assert isinstance(net, nn.Module), "a backbone must be an nn.Module"
        net.eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():  # zero-initialised output layers would hide everything
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            x = torch.randn(3, cin, image_size, image_size, generator=g)
            t = torch.tensor([1, 10, 1000])
            out = net(x, t)
            assert out.shape == (3, cout, image_size, image_size), f"output shape {tuple(out.shape)}"
            assert bool(torch.isfinite(out).all()), "output must be finite"
            alone = net(x[1:2], t[1:2])
            _close(alone, out[1:2], "an example's output must not depend on the rest of the batch", rtol=1e-4, atol=1e-5)
            assert not torch.allclose(net(x, torch.tensor([5, 500, 900])), out), "output must depend on t"
            assert not torch.allclose(net(x * 0.5, t), out), "output must depend on x"


# -- samplers ------------------------------------------------------------------------------------
def check_sampler(sampler) -> None:
    """A sampler returns finite samples of the asked-for shape, reproducible from a seeded
    generator and different for different seeds."""
    model = tiny_model(sampler=sampler, timesteps=20)
    shape = (3, 2, 4, 4)
    a = sampler.sample(model, shape, generator=torch.Generator().manual_seed(1))
    b = sampler.sample(model, shape, generator=torch.Generator().manual_seed(1))
    c = sampler.sample(model, shape, generator=torch.Generator().manual_seed(2))
    assert a.shape == shape, f"sample shape {tuple(a.shape)} != {shape}"
    assert bool(torch.isfinite(a).all()), "samples must be finite"
    assert torch.equal(a, b), "the same generator seed must give the same samples"
    assert not torch.equal(a, c), "different seeds must give different samples"


# -- time samplers -------------------------------------------------------------------------------
def check_time_sampler(sampler, timesteps: int = 20) -> None:
    """Times in the schedule's range, reproducible from a seeded generator; importance weights
    positive with mean 1 under the sampler's own draws (E_p[1 / (T p)] = 1: the objective stays
    unbiased), also after it has learned from losses that differ by t; its state restores."""
    import copy

    from .schedules import LinearSchedule

    schedule = LinearSchedule(timesteps=timesteps)
    g = torch.Generator().manual_seed(0)
    for _ in range(3 * timesteps):  # learn from losses growing with t (every t seen many times)
        t, _ = sampler.sample(16, schedule, g)
        sampler.update(t, t.double() ** 2 + torch.rand(16, generator=g, dtype=torch.float64))
        sampler.update(torch.arange(1, timesteps + 1), torch.arange(1, timesteps + 1).double() ** 2)
    twin = copy.deepcopy(sampler)
    twin.load_state_dict(copy.deepcopy(sampler.state_dict()))
    a, wa = sampler.sample(20_000, schedule, torch.Generator().manual_seed(1))
    b, wb = twin.sample(20_000, schedule, torch.Generator().manual_seed(1))
    assert a.shape == (20_000,) and not a.is_floating_point(), "times must be integers (B,) for a discrete schedule"
    assert int(a.min()) >= 1 and int(a.max()) <= timesteps, "times must lie in 1..T"
    assert torch.equal(a, b), "the same generator seed and state must give the same times"
    if wa is not None:
        assert wa.shape == a.shape and bool((wa > 0).all() & torch.isfinite(wa).all()), "weights must be > 0"
        assert torch.equal(wa, wb), "the same state must give the same weights"
        mean = float(wa.double().mean())
        assert abs(mean - 1) < 0.05, f"importance weights must average 1 under the sampler's draws, got {mean:.3f}"


# -- metrics -------------------------------------------------------------------------------------
def eval_context(run_dir=None, seed: int = 0):
    """An :class:`~gendiff.evaluation.EvalContext` for a small untrained digits model (T = 20,
    ``eval.samples`` 16, ``eval.fid_samples`` 32, ``eval.nll_examples`` 16) in ``run_dir`` (a new
    temporary folder by default): enough for a metric to run end to end in seconds."""
    import tempfile
    from pathlib import Path

    from .builder import build
    from .evaluation.inputs import eval_context as make
    from .recipe import parse_recipe

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


def check_metric(metric, context=None) -> None:
    """A metric either refuses the small digits run of :func:`eval_context` with a ``ValueError``
    from ``check`` or evaluates it: a JSON-serialisable dict, and report rows of two strings."""
    import json

    context = context or eval_context()
    try:
        metric.check(context.model, context.dataset)
    except ValueError as exc:
        assert str(exc), "check must say why the metric does not apply"
        return
    result = metric.evaluate(context)
    assert isinstance(result, dict) and result, "evaluate must return a non-empty dict"
    json.dumps(result)  # written to RUN/eval/<name>.json
    rows = metric.summary(result)
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in rows), "summary rows are (label, value) strings"


# -- datasets ------------------------------------------------------------------------------------
def check_dataset(dataset) -> None:
    """Both splits load as uint8 (N, C, H, W) in {0..K-1}, with the declared shape; a dataset
    with classes gives int64 labels (N,) in {0..num_classes-1} for each split."""
    for split in ("train", "test"):
        data = dataset.load(split)
        assert data.dtype == torch.uint8, f"{split}: dtype must be uint8, got {data.dtype}"
        assert data.ndim == 4 and tuple(data.shape[1:]) == tuple(dataset.shape), (
            f"{split}: shape {tuple(data.shape)} does not match the declared {tuple(dataset.shape)}"
        )
        assert len(data) > 0 and int(data.max()) < dataset.levels, f"{split}: values must lie in 0..K-1"
        if getattr(dataset, "num_classes", 0):
            labels = dataset.labels(split)
            assert labels.dtype == torch.int64 and labels.shape == (len(data),), (
                f"{split}: labels must be int64 of shape ({len(data)},), got {labels.dtype} {tuple(labels.shape)}"
            )
            assert 0 <= int(labels.min()) and int(labels.max()) < dataset.num_classes, f"{split}: labels in 0..K-1"
            names = getattr(dataset, "class_names", ())
            assert not names or len(names) == dataset.num_classes, "class_names must name every class"
    try:
        dataset.load("no-such-split")
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown split must raise ValueError")
    assert math.prod(dataset.shape) > 0
