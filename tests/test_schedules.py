"""The forward process: eq. 2, eq. 4, eqs. 6-7, the schedules' closed forms and L_T."""

import math

import pytest
import torch

from gendiff.schedules import CosineSchedule, LinearSchedule, QuadraticSchedule


def test_linear_betas_are_the_papers():
    s = LinearSchedule()
    beta = s.tables["beta"]
    assert s.timesteps == 1000 and beta.dtype == torch.float64
    assert beta[1].item() == pytest.approx(1e-4, rel=1e-12)
    assert beta[1000].item() == pytest.approx(0.02, rel=1e-12)
    assert torch.allclose(beta[2:] - beta[1:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


def test_quadratic_betas_are_squares_of_a_linear_ramp():
    beta = QuadraticSchedule(timesteps=10).tables["beta"][1:]
    root = beta.sqrt()
    assert torch.allclose(root[1:] - root[:-1], torch.full((9,), (math.sqrt(0.02) - 0.01) / 9, dtype=torch.float64))


def test_cosine_abar_matches_its_closed_form_where_unclipped():
    s = CosineSchedule(timesteps=1000)
    t = torch.arange(1001, dtype=torch.float64)
    f = torch.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    abar = s.tables["abar"]
    unclipped = s.tables["beta"] < 0.999
    assert torch.allclose(abar[unclipped], (f / f[0])[unclipped], rtol=1e-10)
    assert s.tables["beta"].max() == pytest.approx(0.999)


def test_eq4_moments_agree_with_running_eq2_step_by_step():
    """x_t from T applications of q(x_t | x_{t-1}) (eq. 2) has the moments of eq. 4."""
    s = LinearSchedule(timesteps=200, beta_start=1e-3, beta_end=0.05)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-0.8, 0.3, 1.0], dtype=torch.float64)
    x = x0.repeat(200_000, 1)
    beta = s.tables["beta"]
    for t in range(1, 201):
        x = (1 - beta[t]).sqrt() * x + beta[t].sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
        if t in (1, 50, 200):
            tt = torch.full((1,), t)
            q = s.q_mean_variance(x0[None], tt)
            se = (q.variance[0] / x.shape[0]).sqrt()  # standard error of the mean
            assert ((x.mean(0) - q.mean[0]).abs() < 5 * se).all()
            assert torch.allclose(x.var(0), q.variance[0], rtol=0.015)
            # and q_sample draws from the same distribution
            direct = s.q_sample(x0.repeat(200_000, 1), tt.expand(200_000), torch.randn(x.shape, generator=g, dtype=torch.float64))
            assert ((direct.mean(0) - q.mean[0]).abs() < 5 * se).all()
            assert torch.allclose(direct.var(0), q.variance[0], rtol=0.015)


@pytest.mark.parametrize("t", [2, 3, 50, 999, 1000])
def test_eqs_6_7_posterior_equals_bayes_rule_on_a_grid(t):
    """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), normalised by quadrature."""
    s = LinearSchedule()
    tab = s.tables
    x0, xt = torch.tensor(0.4, dtype=torch.float64), torch.tensor(-0.7, dtype=torch.float64)
    prev_mean, prev_var = tab["sqrt_abar"][t - 1] * x0, 1 - tab["abar"][t - 1]
    sd = math.sqrt(prev_var.item())
    grid = torch.linspace(prev_mean.item() - 12 * sd - 2, prev_mean.item() + 12 * sd + 2, 400_001, dtype=torch.float64)

    def log_normal(x, m, v):
        return -0.5 * (x - m) ** 2 / v - 0.5 * torch.log(2 * math.pi * v)

    logw = log_normal(xt, tab["sqrt_alpha"][t] * grid, tab["beta"][t]) + log_normal(grid, prev_mean, prev_var)
    w = torch.exp(logw - logw.max())
    w = w / w.sum()
    mean = (w * grid).sum()
    var = (w * (grid - mean) ** 2).sum()
    tt = torch.tensor([t])
    q = s.q_posterior(x0.view(1, 1), xt.view(1, 1), tt)
    assert q.mean.item() == pytest.approx(mean.item(), abs=1e-7)
    assert q.variance.item() == pytest.approx(var.item(), rel=1e-4)
    assert tab["posterior_variance"][t].item() == pytest.approx(var.item(), rel=1e-4)


def test_posterior_variance_at_t1_is_zero_and_clipped_to_t2_like_the_official_code():
    tab = LinearSchedule().tables
    assert tab["posterior_variance"][1] == 0
    assert tab["log_posterior_variance"][1] == tab["log_posterior_variance"][2] == torch.log(tab["posterior_variance"][2])
    assert tab["log_fixed_large"][1] == tab["log_posterior_variance"][2]
    assert torch.equal(tab["log_fixed_large"][2:], tab["beta"][2:].log())


def test_prior_term_of_the_linear_schedule_is_about_1e_5_bits_per_dim():
    s = LinearSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, (64, 3, 32, 32), generator=g).double() / 127.5 - 1
    bits = s.prior_kl(x0).mean().item() / math.log(2)
    abar = s.tables["abar"][-1].item()
    closed = 0.5 * (abar * (x0**2).mean().item() - abar - math.log1p(-abar)) / math.log(2)
    assert bits == pytest.approx(closed, rel=1e-6)
    assert 5e-6 < bits < 2e-5


@pytest.mark.parametrize("kwargs, message", [
    ({"timesteps": 1}, "timesteps"),
    ({"timesteps": 10.5}, "timesteps"),
    ({"beta_start": 0.0}, "beta_start"),
    ({"beta_end": 1.5}, "beta_end"),
    ({"beta_start": 0.1, "beta_end": 0.01}, "must not exceed"),
])
def test_bad_linear_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LinearSchedule(**kwargs)


def test_a_fractional_time_is_refused_by_a_discrete_schedule_never_truncated():
    from gendiff.schedules import TimeError

    s = LinearSchedule(timesteps=100)
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(TimeError, match=r"discrete time t in \{1..100\}.*fractional t = 10.5"):
        s.q_sample(x, torch.tensor([10.0, 10.5]), x)
    # integral floats are the same times as integers (nothing is truncated either way)
    a = s.q_sample(x + 0.5, torch.tensor([10.0, 20.0]), x + 0.1)
    b = s.q_sample(x + 0.5, torch.tensor([10, 20]), x + 0.1)
    assert torch.equal(a, b)


def test_continuous_cosine_is_its_closed_form_at_any_time_and_its_grid_builds_the_tables():
    from gendiff.schedules import TimeError, VPCosine

    s = VPCosine(timesteps=50)
    t = torch.tensor([1e-4, 0.013, 0.5, 0.777, 1.0], dtype=torch.float64)
    phi0 = 0.008 / 1.008 * math.pi / 2
    phi1 = math.atan(math.exp(10.0))
    phi = phi0 + t * (phi1 - phi0)
    abar = torch.cos(phi) ** 2 / math.cos(phi0) ** 2
    assert torch.allclose(s.abar(t), abar, rtol=1e-13)
    assert s.log_snr(t)[-1].item() == pytest.approx(-20.0, abs=1e-3)
    assert torch.allclose(s.time_from_log_snr(s.log_snr(t)), t, rtol=1e-10, atol=1e-12)
    x = torch.ones(5, 1, 1, 1, dtype=torch.float64)
    assert torch.allclose(s.at("sqrt_abar", t, x).flatten(), abar.sqrt())
    grid = torch.arange(51, dtype=torch.float64) / 50
    assert torch.allclose(s.tables["abar"], torch.cos(phi0 + grid * (phi1 - phi0)) ** 2 / math.cos(phi0) ** 2,
                          rtol=1e-12)
    # the grid quantities of one step (beta, the posterior) exist on the grid only
    assert s.at("beta", torch.tensor([0.02], dtype=torch.float64), x[:1]).item() == pytest.approx(
        s.tables["beta"][1].item())
    with pytest.raises(TimeError, match="table 'beta'.*grid t = i / 50"):
        s.at("beta", torch.tensor([0.013], dtype=torch.float64), x[:1])


def test_vp_linear_is_song_et_al_vp_sde():
    from gendiff.schedules import VPLinear

    s = VPLinear()
    t = torch.tensor([0.001, 0.25, 1.0], dtype=torch.float64)
    expect = torch.exp(-0.1 * t - 0.5 * 19.9 * t**2)  # exp(-int_0^t beta(s) ds), beta(s) = 0.1 + 19.9 s
    assert torch.allclose(s.abar(t), expect, rtol=1e-14)
    # its T = 1000 grid is close to the paper's linear betas (beta_t ~ beta(t / T) / T)
    assert torch.allclose(s.tables["beta"][1:], LinearSchedule().tables["beta"][1:], rtol=0.05, atol=2e-5)


def test_continuous_training_draws_and_network_time():
    from gendiff.schedules import VPCosine

    s = VPCosine(timesteps=10)
    t = s.uniform_time(10_000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float64 and 0 < t.min() and t.max() <= 1
    assert abs(t.mean().item() - 0.5) < 0.01 and len(t.unique()) == 10_000  # continuous, not the grid
    assert torch.equal(s.network_time(t), 1000 * t)
    assert LinearSchedule().network_time(torch.tensor([7])).item() == 7
