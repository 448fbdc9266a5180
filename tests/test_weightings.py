"""Schedule-aware weightings: min-SNR-gamma and P2 against their closed forms, in every view."""

from __future__ import annotations

import pytest
import torch

import gendiff
from gendiff.errors import IncompatibleComponentsError


class RandomNet(torch.nn.Module):
    """A fixed smooth function of (x_t, t), standing in for an untrained network."""

    def forward(self, x, t):
        return torch.tanh(1.3 * x + (t.to(x.dtype) / 1000).view(-1, 1, 1, 1)) * 0.8


def model(param, weighting, schedule="cosine", **args):
    return gendiff.build({
        "schedule": {"name": schedule, "timesteps": 1000}, "parameterization": {"name": param},
        "variance": {"name": "fixed-large"}, "weighting": {"name": weighting, **args},
        "sampler": {"name": "ancestral"}, "data": {"shape": [1, 3, 3]},
    }, model=RandomNet())


def draws(m, seed=0):
    x0 = torch.rand(64, 1, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    return m.loss_terms(x0, generator=torch.Generator().manual_seed(seed + 100))


def per_example(x):
    return x.flatten(1).mean(1)


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_is_its_closed_form_for_every_parameterization(gamma):
    """Hang et al. (2023): eps: min(SNR, g) / SNR ||eps - eps_hat||^2; x0: min(SNR, g) ||x0 - x0_hat||^2;
    v: min(SNR, g) / (SNR + 1) ||v - v_hat||^2, computed here from the raw output and the tables."""
    for param in ("eps", "x0", "v"):
        m = model(param, "min-snr", gamma=gamma)
        terms = draws(m)
        abar = m.schedule.tables["abar"][terms.t]
        snr = abar / (1 - abar)
        clipped = snr.clamp(max=gamma)
        err = per_example((terms.output - terms.target) ** 2)  # the network's own view
        expect = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[param] * err
        got = m.weighting.loss(terms)
        assert torch.allclose(got, expect, rtol=1e-9, atol=1e-12), param
        assert (snr > gamma).any() and (snr < gamma).any()  # both branches of the min were used


def test_min_snr_gives_the_same_loss_whatever_the_view_of_one_network():
    """One network read as eps, x0 or v: the same predictions give one min-SNR loss."""
    eps_model, x0_model = model("eps", "min-snr"), model("x0", "min-snr")
    terms = draws(eps_model)
    x0_terms = draws(x0_model)
    assert torch.equal(terms.t, x0_terms.t)
    # feed the x0 model the eps network's x0_hat as its output: the same prediction, another view
    x0_terms.output, x0_terms.prediction = terms.prediction.x0, terms.prediction
    assert torch.allclose(eps_model.weighting.loss(terms), x0_model.weighting.loss(x0_terms), rtol=1e-9)


def test_p2_is_its_closed_form():
    m = model("eps", "p2", k=1.0, gamma=0.5)
    terms = draws(m)
    abar = m.schedule.tables["abar"][terms.t]
    snr = abar / (1 - abar)
    expect = per_example((terms.output - terms.noise) ** 2) / (1 + snr) ** 0.5
    assert torch.allclose(m.weighting.loss(terms), expect, rtol=1e-12)
    simple = model("eps", "p2", k=1.0, gamma=0.0)
    terms = draws(simple)
    assert torch.allclose(simple.weighting.loss(terms), terms.mse(), rtol=1e-12)  # gamma = 0 is L_simple


def test_the_views_of_the_mse_agree_with_each_other():
    m = model("v", "simple")
    terms = draws(m)
    snr = m.schedule.snr(terms.t)
    assert torch.allclose(terms.mse(), terms.mse("v"), rtol=1e-10)  # v is the network's own view
    assert torch.allclose(terms.mse("x0") * snr, terms.mse("eps"), rtol=1e-8)
    assert torch.allclose(terms.mse("x0") * (snr + 1), terms.mse("v"), rtol=1e-8)
    with pytest.raises(ValueError, match="unknown view"):
        terms.mse("score")


def test_snr_weightings_refuse_what_they_cannot_weight():
    for weighting in ("min-snr", "p2"):
        with pytest.raises(IncompatibleComponentsError, match=f"weighting '{weighting}'.*parameterization 'x0-logits'"):
            gendiff.build({"schedule": {"name": "masking"}, "parameterization": {"name": "x0-logits"},
                           "variance": {"name": "categorical"}, "weighting": {"name": weighting},
                           "sampler": {"name": "ancestral"}, "data": {"shape": [1, 2, 2], "levels": 2}},
                          model=lambda x, t: torch.zeros(len(x), 2, 2, 2))
    with pytest.raises(gendiff.errors.RecipeError, match="gamma must be a positive number"):
        model("eps", "min-snr", gamma=0.0)
    with pytest.raises(gendiff.errors.RecipeError, match="k must be > 0"):
        model("eps", "p2", k=0.0)
