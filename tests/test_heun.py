"""The Karras-grid Heun sampler (Karras et al. 2022, Algorithm 1 without churn) on continuous and
discrete schedules: exact on Gaussian data up to a second-order error, 2N - 1 network calls."""

from __future__ import annotations

import math

import pytest
import torch

import gendiff
from gendiff.plugins import registry
from gendiff.samplers import Heun, karras_sigmas

M, S = 0.3, 0.5  #: the data: every coordinate ~ N(M, S^2), independent


def gaussian_data_model(schedule_name: str, calls: list | None = None):
    """The Bayes-optimal eps for Gaussian data, E[x0 | x_t] = M + alpha S^2 / (alpha^2 S^2 + sigma^2)
    (x_t - alpha M), as an explicit network; ``calls`` records each call's batch of times."""
    schedule = registry("schedule").get(schedule_name)(timesteps=1000)

    def net(x, tn):
        if calls is not None:
            calls.append(tn)
        t = tn / schedule.time_scale if schedule.continuous else tn
        a, s = (v.view(-1, 1, 1, 1).to(x.dtype) for v in schedule.alpha_sigma(t))
        x0 = M + a * S**2 / (a**2 * S**2 + s**2) * (x - a * M)
        return (x - a * x0) / s

    recipe = {"schedule": {"name": schedule_name, "timesteps": 1000}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"}, "sampler": {"name": "heun"},
              "data": {"shape": [1, 2, 2]}}
    return gendiff.build(recipe, model=net)


def exact_answer(x_T: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE of Gaussian data solved in closed form, in Karras's x~ = x / alpha:
    x~(sigma) - M = (x~(sigma_max) - M) sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_max^2), from x~ =
    x_T sqrt(1 + sigma_max^2) down to sigma_min, then the last step's D(x~; sigma_min) (the Euler
    step to sigma = 0 lands on the denoiser's output)."""
    s_max, s_min = sigmas[0].item(), sigmas[-2].item()
    x = x_T.double() * math.sqrt(1 + s_max**2)
    at_min = M + (x - M) * math.sqrt(S**2 + s_min**2) / math.sqrt(S**2 + s_max**2)
    return M + S**2 / (S**2 + s_min**2) * (at_min - M)


@pytest.mark.parametrize("schedule", ["vp-cosine", "linear"])  # continuous and discrete
def test_heun_reaches_the_exact_gaussian_answer_at_second_order(schedule):
    model = gaussian_data_model(schedule)
    errors = []
    for steps in (8, 16, 32, 64):
        sampler = Heun(steps=steps)
        _, sigmas = sampler.levels(model.schedule)
        x = model.sample(64, generator=torch.Generator().manual_seed(0), sampler=sampler)
        x_T = model.prior_sample((64, 1, 2, 2), generator=torch.Generator().manual_seed(0))
        errors.append((x.double() - exact_answer(x_T, sigmas)).abs().max().item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(r > 3.5 for r in ratios), (errors, ratios)  # halving the step divides the error by ~4
    assert errors[-1] < 1e-2


@pytest.mark.parametrize("schedule", ["vp-cosine", "linear"])
def test_heun_calls_the_network_2n_minus_1_times_at_times_the_schedule_accepts(schedule):
    calls = []
    model = gaussian_data_model(schedule, calls)
    calls.clear()
    model.sample(3, sampler=Heun(steps=10))
    assert len(calls) == 2 * 10 - 1
    for tn in calls:
        if model.schedule.continuous:
            assert tn.is_floating_point()
        else:  # a discrete schedule only ever sees its own integer steps
            assert not tn.is_floating_point() and int(tn.min()) >= 1 and int(tn.max()) <= 1000


def test_the_karras_grid_is_eq_5():
    sigmas = karras_sigmas(0.002, 80.0, 5, 7.0)
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002) and sigmas[-1] == 0
    roots = sigmas[:-1] ** (1 / 7)
    assert torch.allclose(roots[1:] - roots[:-1], torch.full((4,), (0.002 ** (1 / 7) - 80 ** (1 / 7)) / 4,
                                                                dtype=torch.float64))


def test_bad_heun_settings_are_refused():
    for kwargs, message in (({"steps": 0}, "steps"), ({"rho": -1.0}, "rho"), ({"sigma_min": 5.0, "sigma_max": 1.0},
                                                                              "below sigma_max"),
                            ({"clip_x0": "yes"}, "clip_x0")):
        with pytest.raises(ValueError, match=message):
            Heun(**kwargs)
