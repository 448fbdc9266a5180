"""The paper's autoregressive special case (Sec. 4.3) is exact: on 2x2 binary images every
probability is checked against an explicit autoregressive product of the same network's
conditionals, and the sampler against those probabilities."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import gendiff
from gendiff.distributions import BLANK
from gendiff.errors import IncompatibleComponentsError, RecipeError
from gendiff.samplers import Ancestral

D = 4  # 2x2 pixels, one channel
ALL_X = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=D)), dtype=torch.float64).view(16, 1, 2, 2)


class Net(torch.nn.Module):
    """A fixed random network from (values, mask) to 2 logits per pixel; its conditionals are
    not those of any single joint distribution, so every order gives a different model."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(8, 24, generator=g, dtype=torch.float64), requires_grad=False)
        self.w2 = torch.nn.Parameter(torch.randn(24, 8, generator=g, dtype=torch.float64) * 0.8, requires_grad=False)

    def forward(self, x, t):
        h = torch.tanh(x.reshape(len(x), -1).to(torch.float64) @ self.w1)
        return (h @ self.w2).view(len(x), 2, 2, 2).to(x.dtype)


def recipe(order="raster", timesteps=0, weighting="vlb"):
    return {
        "schedule": {"name": "masking", "order": order, "timesteps": timesteps, "seed": 3},
        "parameterization": {"name": "x0-logits"}, "variance": {"name": "categorical"},
        "weighting": {"name": weighting}, "sampler": {"name": "ancestral"},
        "data": {"shape": [1, 2, 2], "levels": 2},
    }


def conditional(net, x, revealed, t):
    """p(x_d | the revealed coordinates) for every d, from the network, by hand: masked values 0,
    then one mask channel (1 = masked)."""
    mask = (~revealed).to(x.dtype)
    logits = net(torch.cat([x * (1 - mask), mask], dim=1), torch.full((len(x),), t)).view(len(x), 2, 4)
    k = ((x.view(len(x), 4) + 1) / 2).long()
    return torch.softmax(logits, dim=1).gather(1, k[:, None]).squeeze(1)  # (N, 4)


def explicit_probability(net, x, groups):
    """prod over groups (in generation order) of prod over the group's coordinates of
    p(x_d | all earlier groups): the autoregressive product."""
    p = torch.ones(len(x), dtype=torch.float64)
    revealed = torch.zeros(len(x), 4, dtype=torch.bool)
    T = len(groups)
    for i, group in enumerate(groups):
        cond = conditional(net, x, revealed.view(len(x), 1, 2, 2), T - i)
        for d in group:
            p = p * cond[:, d]
        revealed[:, list(group)] = True
    return p


def generation_groups(model):
    """The coordinates revealed at t = T, T-1, ..., 1, read off the schedule's ranks."""
    s = model.schedule
    rank = s.rank.flatten()
    groups = []
    for t in range(s.timesteps, 0, -1):
        k, k_prev = int(s.masked_count[t]), int(s.masked_count[t - 1])
        groups.append([d for d in range(D) if D - k < rank[d] <= D - k_prev])
    return groups


def sample_counts(model, n, sampler=None, seed=0):
    x = model.sample(n, generator=torch.Generator().manual_seed(seed), sampler=sampler)
    index = (((x.view(n, 4) + 1) / 2).long() * torch.tensor([8, 4, 2, 1])).sum(1)
    return np.bincount(index.numpy(), minlength=16)


class Sharpened(Ancestral):
    """A deliberately wrong sampler: the right loop with logits tripled."""

    name = "sharpened"

    def run(self, model, x, t_from, generator=None, progress=None, trace=None):
        for t in range(t_from, 0, -1):
            step = model.reverse_step(x, model.time(t, len(x), x.device))
            step.p.logits = step.p.logits * 3
            x = step.p.sample(generator)
        return x


@pytest.mark.parametrize("order", ["raster", "random"])
@pytest.mark.parametrize("timesteps", [0, 2], ids=["T=D", "T=D/2"])
def test_fixed_order_bound_is_the_exact_autoregressive_likelihood(order, timesteps):
    net = Net()
    model = gendiff.build(recipe(order, timesteps), model=net)
    assert model.timesteps == (timesteps or D)
    groups = generation_groups(model)
    assert sorted(d for g in groups for d in g) == [0, 1, 2, 3]
    if order == "random":
        assert groups != [[0], [1], [2], [3]]
    nll = model.nll_bpd(ALL_X)
    assert torch.equal(nll.prior, torch.zeros(16))  # L_T = 0
    p_model = torch.exp2(-nll.total * D)
    assert abs(p_model.sum().item() - 1) < 1e-5
    p_explicit = explicit_probability(net, ALL_X, groups)
    assert torch.allclose(nll.total, -torch.log2(p_explicit) / D, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order", ["raster", "random"])
def test_sampler_draws_from_the_models_distribution(order):
    net = Net()
    model = gendiff.build(recipe(order), model=net)
    p = explicit_probability(net, ALL_X, generation_groups(model)).numpy()
    n = 20_000
    counts = sample_counts(model, n)
    assert chisquare(counts, p * n).pvalue > 0.001
    wrong = sample_counts(model, n, sampler=Sharpened())
    assert chisquare(wrong, p * n).pvalue < 0.001


def test_order_agnostic_bound_is_an_upper_bound_on_the_mixture_likelihood():
    net = Net()
    model = gendiff.build(recipe("agnostic"), model=net)
    orders = list(itertools.permutations(range(D)))
    per_order = torch.stack([explicit_probability(net, ALL_X, [[d] for d in order]) for order in orders])
    mixture = per_order.mean(0)  # the model's distribution: a uniformly random order, then the product
    assert abs(mixture.sum().item() - 1) < 1e-9
    expected_bound = (-torch.log(per_order)).mean(0)  # E over orders of -log p(x | order), nats

    # the bound computed by the model's own terms, its expectation over x_t taken exactly:
    # at time t the masked coordinates are a uniformly random t-subset
    bound = torch.zeros(16, dtype=torch.float64)
    for t in range(1, D + 1):
        subsets = list(itertools.combinations(range(D), t))
        for subset in subsets:
            x_t = ALL_X.clone().view(16, 4)
            x_t[:, list(subset)] = BLANK
            x_t = x_t.view(16, 1, 2, 2)
            tt = torch.full((16,), t)
            bound += model.bound_term(ALL_X, x_t, tt, model.p_transition(x_t, tt)) / len(subsets)
    assert torch.allclose(bound, expected_bound, rtol=1e-10)
    assert (bound >= -torch.log(mixture) - 1e-12).all()
    assert (bound > -torch.log(mixture) + 1e-6).any()  # strictly looser somewhere: a true upper bound
    # one-draw estimates from nll_bpd average to the same bound
    draws = torch.stack([model.nll_bpd(ALL_X, torch.Generator().manual_seed(s)).total for s in range(300)])
    draws = draws * D * math.log(2)
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - bound).abs() < 4 * se).all()
    # and the sampler draws from the mixture
    counts = sample_counts(model, 20_000)
    assert chisquare(counts, mixture.numpy() * 20_000).pvalue > 0.001


def test_masked_ce_equals_the_bound_for_the_agnostic_order_with_t_equal_d():
    net = Net()
    a = gendiff.build(recipe("agnostic", weighting="vlb"), model=net)
    b = gendiff.build(recipe("agnostic", weighting="masked-ce"), model=net)
    x0 = ALL_X.repeat(4, 1, 1, 1)
    ta, tb = a.loss_terms(x0, torch.Generator().manual_seed(0)), b.loss_terms(x0, torch.Generator().manual_seed(0))
    assert torch.allclose(a.weighting.loss(ta), b.weighting.loss(tb))


def test_the_schedule_masks_one_more_coordinate_per_step():
    model = gendiff.build(recipe("raster"), model=Net())
    x0 = ALL_X[5:6]
    noise = model.schedule.noise_like(x0)
    for t in range(0, D + 1):
        x_t = model.schedule.q_sample(x0, torch.tensor([t]), noise)
        assert (x_t == BLANK).sum() == t
        # raster: the last coordinates in raster order are masked first (revealed last)
        assert (x_t.flatten()[D - t:] == BLANK).all()
    assert (model.prior_sample((2, 1, 2, 2)) == BLANK).all()


@pytest.mark.parametrize("changes, names", [
    ({"parameterization": {"name": "eps"}}, ["parameterization 'eps'", "schedule 'masking'"]),
    ({"variance": {"name": "fixed-large"}}, ["variance 'fixed-large'", "schedule 'masking'"]),
    ({"weighting": {"name": "simple"}}, ["weighting 'simple'", "parameterization 'x0-logits'"]),
    ({"schedule": {"name": "linear"}}, ["parameterization 'x0-logits'", "schedule 'linear'"]),
])
def test_incompatible_mixes_name_both_components(changes, names):
    r = recipe()
    r.update(changes)
    with pytest.raises(IncompatibleComponentsError) as err:
        gendiff.build(r, model=Net())
    for name in names:
        assert name in str(err.value)


def test_more_steps_than_coordinates_is_refused():
    with pytest.raises(RecipeError, match="timesteps \\(5\\) cannot exceed the data dimension D = 4"):
        gendiff.build(recipe(timesteps=5), model=Net())
    with pytest.raises(RecipeError, match="order must be one of raster, random, agnostic"):
        gendiff.build(recipe(order="spiral"), model=Net())
