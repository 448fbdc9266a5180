"""Variational Diffusion Models and the trainable-component contract (issue 24).

Closed forms on Gaussian data with the Bayes-optimal denoiser, the invariance of the
continuous-time bound to the schedule's interior, the T-step loss tending to the continuous one,
the exact gradient of the variance-minimising schedule, and a learned schedule through training,
checkpoints, resume and loading.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from gendiff.builder import build
from gendiff.errors import GendiffError, IncompatibleComponentsError, RecipeError, TrainingError
from gendiff.schedules import VDMFixed, VDMLearned, VDMLearnedEndpoints
from gendiff.testing.models import testing_plugin_system
from gendiff.weightings import ContinuousVLB, DiscreteVLB

S2 = 0.25  # data variance of the Gaussian test data x ~ N(0, S2 I)


def gaussian_model(schedule: dict, weighting: str = "vdm", time_sampler: dict | None = None):
    """A VDM model on (1, 4, 4) Gaussian data whose network is the Bayes-optimal eps estimate,
    E[eps | z_t] = sigma_t z_t / (alpha_t^2 S2 + sigma_t^2), computed from the model's own schedule."""
    holder = {}

    def bayes(x, t_net):
        if "model" not in holder:  # the build's probe of the output shape
            return torch.zeros_like(x)
        sched = holder["model"].schedule
        t = (t_net.double() / sched.time_scale)
        alpha, sigma = sched.alpha_sigma(t)
        a, s = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
        return (s * x.double() / (a**2 * S2 + s**2)).to(x.dtype)

    recipe = {"schedule": schedule, "parameterization": {"name": "eps"}, "variance": {"name": "fixed-small"},
              "weighting": {"name": weighting}, "sampler": {"name": "ancestral"},
              "time_sampler": time_sampler or {"name": "uniform"}, "data": {"shape": [1, 4, 4], "levels": 256}}
    model = build(recipe, model=bayes)
    holder["model"] = model
    return model


def closed_form_diffusion(gamma_min: float, gamma_max: float) -> float:
    """Per dimension, in nats: 1/2 [log(1 + S2 SNR_0) - log(1 + S2 SNR_1)], SNR = exp(-gamma)."""
    return 0.5 * (math.log1p(S2 * math.exp(-gamma_min)) - math.log1p(S2 * math.exp(-gamma_max)))


def diffusion_draws(model, n: int = 6000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((n, 1, 4, 4), generator=g) * math.sqrt(S2)
    bound = model.continuous_bound(x0, generator=g, draws=1)
    return bound.diffusion[:, 0].double() * math.log(2.0)  # nats per dimension, one draw of t each


def bent_schedule(gamma_min=-6.0, gamma_max=4.0):
    """A vdm-learned schedule with a strongly curved interior and the given (fixed) endpoints."""
    return {"name": "vdm-learned", "timesteps": 100, "gamma_min": gamma_min, "gamma_max": gamma_max,
            "features": 8, "learned_endpoints": False}


def bend(model, seed=3):
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        model.schedule.l2_w.copy_(torch.randn(8, generator=g) * 8)
        model.schedule.l2_b.copy_(torch.randn(8, generator=g) * 4)
        model.schedule.l3_w.copy_(torch.rand(8, generator=g) * 200)


def test_continuous_bound_matches_its_closed_form_and_is_invariant_to_the_interior():
    """VDM's invariance: with the Bayes-optimal denoiser, the diffusion loss depends on the
    schedule only through SNR(0) and SNR(1); the Monte Carlo estimates of two schedules with the same
    endpoints both match the closed form, while the variance of their estimates differs."""
    expected = closed_form_diffusion(-6.0, 4.0)
    linear = gaussian_model({"name": "vdm-fixed", "timesteps": 100, "gamma_min": -6.0, "gamma_max": 4.0})
    curved = gaussian_model(bent_schedule())
    bend(curved)
    g0 = curved.schedule.gamma(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert abs(float(g0[0]) + 6.0) < 1e-9 and abs(float(g0[2]) - 4.0) < 1e-9
    assert abs(float(g0[1]) + 1.0) > 0.5, "the curved schedule must differ from the linear one inside"
    variances = []
    for model in (linear, curved):
        draws = diffusion_draws(model)
        mean, err = float(draws.mean()), float(draws.std() / math.sqrt(len(draws)))
        assert abs(mean - expected) < 4 * err, (mean, expected, err)
        assert err < 0.05 * expected  # the check has power
        variances.append(float(draws.var()))
    ratio = variances[1] / variances[0]
    assert ratio > 1.3 or ratio < 1 / 1.3, f"variances should differ, ratio {ratio:.3f}"


def fake_terms(schedule, t: torch.Tensor):
    """LossTerms-like expectations at fixed times: the exact E||eps - eps_hat||^2 / D of the
    Bayes-optimal denoiser (S2 SNR / (1 + S2 SNR)) and no endpoint terms, to drive a weighting's code."""
    snr = schedule.snr(t)
    mmse = S2 * snr / (1 + S2 * snr)
    return SimpleNamespace(t=t, schedule=schedule, mse=lambda view=None: mmse, endpoints=lambda: torch.zeros_like(t),
                           log_snr_and_derivative=lambda: schedule.log_snr_and_derivative(t))


def test_the_discrete_loss_tends_to_the_continuous_one_as_T_grows():
    """The weightings' own code at exact expectations: the T-step loss (vdm-discrete, summed over
    the grid) exceeds the continuous one (vdm, integrated) and the ratio falls towards 1 as T grows."""
    continuous = None
    ratios = {}
    for T in (10, 100, 1000):
        sched = VDMFixed(timesteps=T, gamma_min=-6.0, gamma_max=4.0)
        grid = torch.arange(1, T + 1, dtype=torch.float64) / T
        discrete = float(DiscreteVLB().loss(fake_terms(sched, grid)).mean())
        if continuous is None:
            fine = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000
            continuous = float(ContinuousVLB().loss(fake_terms(sched, fine)).mean())
            assert abs(continuous - closed_form_diffusion(-6.0, 4.0)) < 1e-8
        ratios[T] = discrete / continuous
    assert ratios[10] > ratios[100] > ratios[1000] > 1.0, ratios
    # the excess falls as 1/T: measured 0.535, 0.0405, 0.00394 (10, 100, 1000 steps)
    assert ratios[1000] - 1 < 0.01 and 5 < (ratios[100] - 1) / (ratios[1000] - 1) < 20, ratios


def tiny_vdm(interior: str, seed: int = 0, **schedule):
    recipe = {"schedule": {"name": "vdm-learned", "timesteps": 50, "features": 8, "interior": interior, **schedule},
              "parameterization": {"name": "eps"}, "variance": {"name": "fixed-small"}, "weighting": {"name": "vdm"},
              "sampler": {"name": "ancestral"}, "time_sampler": {"name": "low-discrepancy"},
              "backbone": {"name": "tiny-conv"}, "data": {"shape": [2, 4, 4], "levels": 17}}
    torch.manual_seed(seed)
    return build(recipe, plugins=testing_plugin_system())


def test_the_variance_minimising_gradient_is_exactly_that_of_the_mean_squared_loss():
    """interior = "variance": after backward + after_backward the interior's gradient equals
    autograd's gradient of mean(L^2), and every other parameter's that of mean(L)."""
    var, plain = tiny_vdm("variance"), tiny_vdm("loss")
    plain.load_state_dict(var.state_dict())
    x0 = (torch.randint(0, 17, (16, 2, 4, 4), generator=torch.Generator().manual_seed(1)).float() * 2 / 16 - 1)
    for m in (var, plain):
        m.train()
    loss, losses = var.objective(var.loss_terms(x0, generator=torch.Generator().manual_seed(2)))
    loss.backward()
    var.after_backward(losses.detach())
    loss2, losses2 = plain.objective(plain.loss_terms(x0, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(losses, losses2)
    interior = ["l1_w", "l1_b", "l2_w", "l2_b", "l3_w"]
    sq = torch.autograd.grad((losses2.double() ** 2).mean(), [getattr(plain.schedule, n) for n in interior],
                             retain_graph=True)
    scale = max(float(e.abs().max()) for e in sq)
    assert scale > 0
    for name, expect in zip(interior, sq):
        got = getattr(var.schedule, name).grad
        assert got is not None and torch.allclose(got.double(), expect.double(), rtol=1e-3, atol=1e-3 * scale), name
    loss2.backward()
    assert torch.allclose(var.schedule.ends.grad, plain.schedule.ends.grad, rtol=1e-5)
    for (name, p), q in zip(var.backbone.named_parameters(), plain.backbone.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-8), name


def test_variance_minimising_training_lowers_the_variance_and_keeps_the_bound():
    """A few hundred Adam steps on the interior alone (Bayes-optimal denoiser, fixed endpoints):
    the variance of the per-example estimate falls while its mean stays the closed form."""
    model = gaussian_model({**bent_schedule(), "interior": "variance"})
    bend(model)
    before = diffusion_draws(model, seed=10)
    opt = torch.optim.Adam(model.schedule.parameters(), lr=3e-2)
    model.train()
    for step in range(150):
        g = torch.Generator().manual_seed(100 + step)
        x0 = torch.randn((256, 1, 4, 4), generator=g) * math.sqrt(S2)
        opt.zero_grad()
        loss, losses = model.objective(model.loss_terms(x0, generator=g))
        loss.backward()
        model.after_backward(losses.detach())
        opt.step()
        assert model.parameter_problems() == []
    model.eval()
    after = diffusion_draws(model, seed=10)
    assert float(after.var()) < 0.7 * float(before.var()), (float(before.var()), float(after.var()))
    expected = closed_form_diffusion(-6.0, 4.0)
    assert abs(float(after.mean()) - expected) < 4 * float(after.std()) / math.sqrt(len(after))


def test_tables_follow_the_parameters_and_are_built_without_gradients():
    sched = VDMLearnedEndpoints(timesteps=20)
    first = sched.tables["abar"].clone()
    assert not sched.tables["abar"].requires_grad
    assert float(first[0]) < 1.0 and abs(float(first[0]) - torch.sigmoid(torch.tensor(13.3)).item()) < 1e-6
    with torch.no_grad():
        sched.b.add_(1.0)
    second = sched.tables["abar"]
    assert not torch.equal(first, second)
    fresh = VDMLearnedEndpoints(timesteps=20)
    fresh.load_state_dict(sched.state_dict())
    assert torch.equal(fresh.tables["posterior_variance"], sched.tables["posterior_variance"])
    x = torch.zeros(3, 1, 2, 2)
    t = torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(sched.at("posterior_variance", t, x).flatten(), sched.tables["posterior_variance"][[1, 10, 20]].float())


@pytest.mark.parametrize("args, message", [
    ({"gamma_min": 5.0, "gamma_max": -13.3}, "gamma_min (5.0) must be below gamma_max"),
    ({"gamma_min": 1.0, "gamma_max": 1.0}, "must be below"),
    ({"gamma_min": -40.0}, "gamma_min must lie in [-30, 30]"),
])
def test_bad_gamma_endpoints_are_refused(args, message):
    recipe = {"schedule": {"name": "vdm-fixed", **args}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-small"}, "weighting": {"name": "vdm"}, "sampler": {"name": "ancestral"},
              "backbone": {"name": "tiny-conv"}, "data": {"shape": [1, 4, 4]}}
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build(recipe, plugins=testing_plugin_system())


def vdm_build(schedule: dict | None = None, weighting: str = "vdm", time_sampler: dict | None = None,
              backbone: dict | None = None):
    recipe = {"schedule": {"name": "vdm-learned", "features": 4, **(schedule or {})}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-small"}, "weighting": {"name": weighting}, "sampler": {"name": "ancestral"},
              "time_sampler": time_sampler or {"name": "low-discrepancy"}, "backbone": backbone or {"name": "tiny-conv"},
              "data": {"shape": [1, 4, 4]}}
    return build(recipe, plugins=testing_plugin_system())


@pytest.mark.parametrize("schedule, time_sampler, message", [
    ({"features": 0}, None, "features must be an integer from 1 to 65536, got 0"),
    ({"features": 2.5}, None, "argument 'features' expects an integer (default 1024), got 2.5."),
    ({"interior": "median"}, None, 'interior must be "variance"'),
    ({"learned_endpoints": "yes"}, None, "argument 'learned_endpoints' expects a boolean (default True), got 'yes'."),
    ({}, {"name": "low-discrepancy", "grid": 1}, "argument 'grid' expects a boolean (default False), got 1."),
    ({}, {"name": "low-discrepancy", "grid": "all"}, "argument 'grid' expects a boolean"),
])
def test_bad_vdm_schedule_and_time_sampler_arguments_are_refused_by_name(schedule, time_sampler, message):
    with pytest.raises(RecipeError) as info:
        vdm_build(schedule, time_sampler=time_sampler)
    assert message in str(info.value)


def test_the_discrete_vdm_loss_needs_grid_times():
    for sampler in ({"name": "uniform"}, {"name": "low-discrepancy"}):
        with pytest.raises(IncompatibleComponentsError, match=f"weighting 'vdm-discrete' requires a time_sampler that "
                                                              f"provides grid-times, but time_sampler '{sampler['name']}'"):
            vdm_build(weighting="vdm-discrete", time_sampler=sampler)
    model = vdm_build(weighting="vdm-discrete", time_sampler={"name": "low-discrepancy", "grid": True})
    t = model.time_sampler.sample(64, model.schedule, torch.Generator().manual_seed(0), "cpu")[0]
    steps = t * model.timesteps  # the grid times t = i / T, i in 1..T
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.min() >= 1 and steps.max() <= model.timesteps


@pytest.mark.parametrize("features", [[-1], [17], [3, 3], [2.0]])
def test_bad_fourier_features_are_refused(features):
    with pytest.raises(RecipeError, match="fourier_features must be distinct integer exponents from 0 to 16"):
        vdm_build(backbone={"name": "unet", "channels": 8, "channel_mult": [1], "num_res_blocks": 1,
                            "attn_resolutions": [], "norm_groups": 4, "fourier_features": features})


def test_a_learned_schedule_with_a_weighting_that_cannot_train_it_is_refused():
    recipe = {"schedule": {"name": "vdm-learned"}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-small"}, "weighting": {"name": "simple"}, "sampler": {"name": "ancestral"},
              "backbone": {"name": "tiny-conv"}, "data": {"shape": [1, 4, 4]}}
    with pytest.raises(IncompatibleComponentsError, match="schedule 'vdm-learned' requires a weighting that provides "
                                                          "trains-schedule, but weighting 'simple'"):
        build(recipe, plugins=testing_plugin_system())


def test_non_monotone_or_non_finite_schedules_are_detected():
    sched = VDMLearned(timesteps=10, features=4)
    assert sched.check_parameters() is None
    with torch.no_grad():
        sched.ends.copy_(torch.tensor([3.0, -3.0]))
    assert "gamma_min = 3 >= gamma_max = -3" in sched.check_parameters()
    with torch.no_grad():
        sched.ends.copy_(torch.tensor([-3.0, 3.0]))
        sched.l2_w[0] = float("nan")
    assert "non-finite" in sched.check_parameters()
    lin = VDMLearnedEndpoints(timesteps=10)
    with torch.no_grad():
        lin.w.zero_()
    assert "no longer increasing" in lin.check_parameters()


def test_the_continuous_bound_is_refused_for_a_schedule_without_finite_snr():
    from gendiff.testing import tiny_model

    with pytest.raises(GendiffError, match="finite SNR at t = 0"):
        tiny_model().continuous_bound(torch.zeros(2, 2, 4, 4))


def test_low_discrepancy_times_are_stratified():
    from gendiff.time_samplers import LowDiscrepancy

    g = torch.Generator().manual_seed(0)
    cont = VDMFixed(timesteps=10)
    t, w = LowDiscrepancy().sample(40, cont, g)
    assert w is None and bool(((t > 0) & (t <= 1)).all())
    gaps = torch.diff(torch.sort(t).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / 40))
    t, _ = LowDiscrepancy(grid=True).sample(40, cont, g)
    assert torch.equal(torch.bincount((t * 10).round().long(), minlength=11)[1:], torch.full((10,), 4))
    from gendiff.schedules import LinearSchedule

    t, _ = LowDiscrepancy().sample(30, LinearSchedule(timesteps=10), g)
    assert t.dtype == torch.long and torch.equal(torch.bincount(t, minlength=11)[1:], torch.full((10,), 3))


def test_fourier_features_widen_the_input_and_see_fine_detail():
    from gendiff.backbones import UNet

    net = UNet(1, 1, 8, channels=8, channel_mult=[1], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
               norm_groups=4, fourier_features=[5, 6])
    assert net.conv_in.in_channels == 5
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    x = torch.zeros(1, 1, 8, 8)
    t = torch.tensor([10])
    assert net(x, t).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="fourier_features"):
        UNet(1, 1, 8, channels=8, channel_mult=[1], attn_resolutions=[], norm_groups=4, fourier_features=[3, 3])


@pytest.mark.parametrize("name", ["vdm-learned-endpoints", "vdm-learned"])
def test_the_learned_schedules_pass_the_trainable_suite(name):
    from gendiff.testing import check_trainable
    from gendiff.plugins import registry

    cls = registry("schedule").get(name)
    check_trainable(cls(timesteps=50, **({"features": 8} if name == "vdm-learned" else {})))


def test_the_guides_trainable_example_passes_the_trainable_suite():
    import re
    from pathlib import Path

    from gendiff.testing import check_trainable

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    code = re.search(r"# trainable example\n(.*?)```", text, flags=re.S).group(1)
    namespace = {}
    exec(code, namespace)
    schedule = namespace["LearnedSlope"](timesteps=50)
    check_trainable(schedule)
    assert schedule.s.grad is not None and float(schedule.s.grad.abs()) > 0


def test_the_learned_schedules_gradients_are_float64_exact():
    """The rescaling to the endpoints cancels l1's scale and shift to first order, so their gradient
    is a sum of O(1) terms that cancel to ~1e-9: with float32 parameters it came out as rounding
    (0, or 1e-7 under another summation order), which Adam turned into lr-sized steps. The
    parameters are float64, and the autograd gradient matches central differences."""
    torch.manual_seed(0)
    sched = VDMLearned(timesteps=10, features=16)
    assert all(p.dtype == torch.float64 for p in sched.parameters())
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    weights = torch.tensor([0.3, -1.0, 0.7], dtype=torch.float64)

    def f():
        h, dh = sched._interior(t)
        return (weights * (h + 0.1 * dh)).sum()

    grads = torch.autograd.grad(f(), [sched.l1_w, sched.l1_b])
    for p, g in zip((sched.l1_w, sched.l1_b), grads):
        with torch.no_grad():
            p += 1e-2  # large enough that the difference (~1e-11) is far above float64 rounding of f
            up = f().item()
            p -= 2e-2
            down = f().item()
            p += 1e-2
        numeric = (up - down) / 2e-2
        assert abs(numeric) > 1e-11  # a real, small gradient
        assert g.item() == pytest.approx(numeric, rel=1e-3, abs=1e-13)
