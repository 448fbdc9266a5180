"""The five views of one model (Sec. 3.2 and the unified perspective) agree with each other."""

import math
import itertools

import pytest
import torch

from gendiff.parameterizations import (
    EpsParameterization,
    MeanParameterization,
    ScoreParameterization,
    VParameterization,
    X0Parameterization,
)
from gendiff.schedules import CosineSchedule, LinearSchedule

ALL = [EpsParameterization(), X0Parameterization(), MeanParameterization(), VParameterization(), ScoreParameterization()]


def _draw(schedule, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(16, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(1, schedule.timesteps + 1, (16,), generator=g)
    t[:2] = torch.tensor([1, schedule.timesteps])
    return x0, noise, t, schedule.q_sample(x0, t, noise)


@pytest.mark.parametrize("schedule", [LinearSchedule(), CosineSchedule()], ids=["linear", "cosine"])
@pytest.mark.parametrize("a, b", list(itertools.permutations(ALL, 2)), ids=lambda p: p.name)
def test_round_trip_between_every_pair_of_parameterizations(schedule, a, b):
    """Express a's perfect output as x0_hat, convert to b's output, and come back unchanged."""
    x0, noise, t, xt = _draw(schedule)
    out_a = a.target(x0, noise, xt, t, schedule)
    pa = a.predict(out_a, xt, t, schedule)
    out_b = b.target(pa.x0, pa.eps, xt, t, schedule)  # b's output that encodes the same model
    pb = b.predict(out_b, xt, t, schedule)
    for field in ("x0", "eps", "mean"):
        assert torch.allclose(getattr(pa, field), getattr(pb, field), rtol=1e-7, atol=1e-7), field
    assert torch.allclose(pb.x0, x0, atol=1e-6) and torch.allclose(pb.eps, noise, atol=1e-6)


def test_eq11_mean_equals_posterior_mean_of_eq15_estimate():
    s = LinearSchedule()
    x0, noise, t, xt = _draw(s, seed=1)
    eps_theta = torch.randn_like(noise)  # any network output
    pred = EpsParameterization().predict(eps_theta, xt, t, s)
    x0_hat = (xt - s.at("sqrt_one_minus_abar", t, xt) * eps_theta) / s.at("sqrt_abar", t, xt)  # eq. 15
    assert torch.allclose(pred.x0, x0_hat)
    assert torch.allclose(pred.mean, s.posterior_mean(x0_hat, xt, t), rtol=1e-9, atol=1e-9)


def test_score_is_minus_eps_over_sigma_and_its_mean_matches_eq11():
    s = LinearSchedule()
    x0, noise, t, xt = _draw(s, seed=2)
    score = ScoreParameterization().target(x0, noise, xt, t, s)
    assert torch.allclose(score, -noise / (1 - s.at("abar", t, xt)).sqrt())
    via_score = ScoreParameterization().predict(score, xt, t, s).mean
    via_eps = EpsParameterization().predict(noise, xt, t, s).mean
    assert torch.allclose(via_score, via_eps, rtol=1e-9, atol=1e-9)


def test_clipping_recomputes_mean_from_the_clipped_estimate():
    """eps, x0, v, score: the official sampler clips x0_hat and forms the mean from it (eq. 7)."""
    s = LinearSchedule()
    x0, noise, t, xt = _draw(s, seed=3)
    out = torch.randn_like(x0) * 5
    for p in ALL:
        if p.name == "mu":
            continue
        pred = p.predict(out, xt, t, s, clip_x0=True)
        assert pred.x0.abs().max() <= 1
        assert torch.allclose(pred.mean, s.posterior_mean(pred.x0, xt, t))
        assert torch.allclose(pred.eps, s.eps_from_x0(xt, t, pred.x0))


def test_mu_keeps_the_networks_mean_when_clipping_by_hand():
    """The official code (and improved-diffusion's PREVIOUS_X) keeps mu_theta as the network's
    output and clips only the displayed x0_hat. A case worked by hand on the linear schedule's
    t = 2: beta_1 = 1e-4, beta_2 = 1e-4 + (0.02 - 1e-4) / 999, abar_1 = 1 - beta_1,
    abar_2 = abar_1 (1 - beta_2); x0 = (mu - coef_xt x_t) / coef_x0 with eq. 7's coefficients."""
    s = LinearSchedule()
    b1 = 1e-4
    b2 = 1e-4 + (0.02 - 1e-4) / 999
    a1, a2 = 1 - b1, (1 - b1) * (1 - b2)
    coef_x0 = math.sqrt(a1) * b2 / (1 - a2)
    coef_xt = math.sqrt(1 - b2) * (1 - a1) / (1 - a2)
    x_t, mu = 0.3, 0.9  # the network's mean lies far enough from x_t that x0_hat leaves [-1, 1]
    x0_hand = (mu - coef_xt * x_t) / coef_x0
    assert x0_hand > 1
    xt, out, t = torch.tensor([[[[x_t]]]], dtype=torch.float64), torch.tensor([[[[mu]]]], dtype=torch.float64), torch.tensor([2])
    mu_param = next(p for p in ALL if p.name == "mu")
    plain = mu_param.predict(out, xt, t, s)
    clipped = mu_param.predict(out, xt, t, s, clip_x0=True)
    assert plain.x0.item() == pytest.approx(x0_hand, rel=1e-12)
    assert plain.mean.item() == clipped.mean.item() == mu  # the network's mean, exactly
    assert clipped.x0.item() == 1.0  # only the displayed x0_hat is clipped
    eps_hand = (x_t - math.sqrt(a2) * 1.0) / math.sqrt(1 - a2)  # eq. 4 solved for eps at x0 = 1
    assert clipped.eps.item() == pytest.approx(eps_hand, rel=1e-12)
    # before the fix the mean was rebuilt from the clipped x0_hat: a different number
    rebuilt = coef_x0 * 1.0 + coef_xt * x_t
    assert abs(rebuilt - mu) > 0.1
