"""Conformance suites of the forward and reverse process: schedules (with the time contract),
parameterizations and variances."""

from __future__ import annotations

import torch

from .helpers import _batch, _close, _times


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
    assert abar[0] == 1.0 or (schedule.noisy_start and 0 < abar[0] < 1), (
        "abar_0 must be 1 (or in (0, 1) for a schedule that provides finite-snr: a noisy z_0)")
    assert bool((abar[1:] < abar[:-1]).all()) and abar[-1] > 0, "abar_t must decrease strictly and stay > 0"
    _close(abar[1:], abar[0] * torch.cumprod(1 - tables["beta"][1:], 0), "abar_t = abar_0 prod(1 - beta_s)", rtol=1e-12)
    mean32 = schedule.posterior_mean(x0.float(), schedule.q_sample(x0.float(), t, torch.zeros_like(x0.float())), t)
    mean64 = schedule.posterior_mean(x0, schedule.q_sample(x0, t, torch.zeros_like(x0)), t)
    expect = schedule.at("abar_prev", t, x0).sqrt() * x0
    _close(mean64, expect, "eq. 7 with noise-free x_t", rtol=1e-10, atol=1e-12)
    _close(mean32, mean64, "float32 vs float64 posterior mean", rtol=1e-4, atol=1e-5)


def _check_time(schedule) -> None:
    """The time contract: grid times in the schedule's convention, uniform draws inside its range,
    fractional times refused by a discrete schedule; for Gaussian schedules a log-SNR that falls
    with t, agrees with the tables on the grid and is inverted by ``time_from_log_snr``."""
    from ..schedules import TimeError

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
    from ..distributions import is_masked

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
    from ..schedules import LinearSchedule

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
    from ..schedules import MaskingSchedule

    schedule = MaskingSchedule(order=order)
    schedule.bind((2, 4, 4), levels)
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, levels, (6, 2, 4, 4), generator=g)
    x0 = k.double() * 2 / (levels - 1) - 1
    tt = torch.full((6,), t)
    x_t = schedule.q_sample(x0, tt, schedule.noise_like(x0, g))
    return schedule, x0, x_t, tt, g


def _check_logits_parameterization(param) -> None:
    from ..distributions import is_masked

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
    from ..parameterizations import EpsParameterization
    from ..schedules import LinearSchedule

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
    from ..distributions import is_masked
    from ..parameterizations import X0Logits

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
