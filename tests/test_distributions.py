"""Closed-form terms of the bound: Gaussian KL and the discretized decoder of eq. 13."""

import math

import pytest
import torch

from gendiff.distributions import Gaussian, levels_to_unit, log_normal_interval, unit_to_levels


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_decoder_probabilities_sum_to_one_over_all_k_bins(levels):
    g = torch.Generator().manual_seed(levels)
    mean = torch.randn(50, generator=g, dtype=torch.float64) * 1.5
    log_var = torch.rand(50, generator=g, dtype=torch.float64) * 8 - 9  # sigma from 0.01 to 0.6
    p = Gaussian(mean[:, None], log_var[:, None])
    grid = levels_to_unit(torch.arange(levels), levels).double()[None].expand(50, levels)
    prob = torch.exp(-p.nll(grid, levels)).sum(dim=1)
    assert torch.allclose(prob, torch.ones(50, dtype=torch.float64), atol=1e-9)


def test_decoder_bins_are_integrals_of_the_normal_density():
    """Eq. 13 bin by bin, against an explicit erf computation."""
    p = Gaussian(torch.tensor([0.1], dtype=torch.float64), torch.log(torch.tensor([0.04], dtype=torch.float64)))
    K = 5
    x = levels_to_unit(torch.arange(K), K).double()
    edges = [-math.inf] + [(-1 + (2 * k + 1) / (K - 1)) for k in range(K - 1)] + [math.inf]
    cdf = [0.5 * (1 + math.erf((e - 0.1) / (0.2 * math.sqrt(2)))) if math.isfinite(e) else float(e > 0) for e in edges]
    expect = torch.tensor([cdf[k + 1] - cdf[k] for k in range(K)], dtype=torch.float64)
    got = torch.exp(-p.nll(x, K))
    assert torch.allclose(got, expect, rtol=1e-10)


def test_decoder_is_finite_with_finite_gradients_in_the_far_tails():
    mean = torch.tensor([-50.0, 50.0, 0.0, 1.0], requires_grad=True)
    log_var = torch.full((4,), -12.0, requires_grad=True)
    x0 = torch.tensor([1.0, -1.0, 1.0, -1.0])
    nll = Gaussian(mean, log_var).nll(x0, 256)
    assert torch.isfinite(nll).all() and (nll > 100).all()
    nll.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_var.grad).all()


def test_log_normal_interval_is_accurate_in_both_tails():
    lo = torch.tensor([-math.inf, 8.0, -9.0, 37.0], dtype=torch.float64)
    hi = torch.tensor([-8.0, 9.0, math.inf, 38.0], dtype=torch.float64)
    got = log_normal_interval(lo, hi)
    sf = lambda z: 0.5 * math.erfc(z / math.sqrt(2))  # noqa: E731
    expect = [math.log(sf(8.0)), math.log(sf(8.0) - sf(9.0)), math.log1p(-sf(9.0))]
    assert got[:3].tolist() == pytest.approx(expect, rel=1e-9)
    assert torch.isfinite(got[3]) and got[3] < -600


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    q = Gaussian(torch.tensor([0.3], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64))
    p = Gaussian(torch.tensor([-0.2], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))
    x = q.mean + (0.5 * q.log_var).exp() * torch.randn(1_000_000, generator=g, dtype=torch.float64)

    def logpdf(d, x):
        return -0.5 * (x - d.mean) ** 2 / d.variance - 0.5 * torch.log(2 * math.pi * d.variance)

    mc = (logpdf(q, x) - logpdf(p, x)).mean()
    assert q.kl(p).item() == pytest.approx(mc.item(), abs=3e-3)
    assert q.kl(q).item() == pytest.approx(0.0, abs=1e-15)


def test_levels_round_trip():
    k = torch.arange(17)
    assert torch.equal(unit_to_levels(levels_to_unit(k, 17), 17), k)
    assert levels_to_unit(torch.tensor([0, 255]), 256).tolist() == [-1.0, 1.0]


def test_decode_is_the_noiseless_mean_clamped_to_the_data_range():
    p = Gaussian(torch.tensor([-1.4, 0.2, 1.2]), torch.zeros(3))
    assert p.decode().tolist() == pytest.approx([-1.0, 0.2, 1.0])
