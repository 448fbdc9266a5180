"""Class conditioning and classifier-free guidance, on a toy problem with a known answer: two
classes whose data are two different atoms, with the Bayes-optimal network written out."""

from __future__ import annotations

import math

import pytest
import torch

import gendiff
from gendiff.component import construct
from gendiff.conditioning import Conditioning, ConditioningError, GuidanceWarning
from gendiff.errors import RecipeError
from gendiff.plugins import registry
from gendiff.schedules import LinearSchedule

ATOMS = torch.tensor([-0.5, 0.5], dtype=torch.float64)  #: class c's data: every coordinate = ATOMS[c]
T = 100


def atoms_net(calls: list | None = None):
    """eps_theta(x_t, t, c) of the exact posterior: x0_hat = ATOMS[c] for a class, and the
    posterior mean over both atoms (equal priors) for the null label 2."""
    abar = LinearSchedule(timesteps=T).tables["abar"]

    def net(x, t, cond):
        if calls is not None:
            calls.append(len(x))
        a = abar.to(x.dtype)[t].view(-1, 1, 1, 1)
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        atoms = ATOMS.to(x.dtype).view(1, 2, 1, 1, 1)
        sq = ((x[:, None] - alpha[:, None] * atoms) ** 2).flatten(2).sum(2)  # (B, 2)
        post = torch.softmax(-sq / (2 * sigma.view(-1, 1) ** 2), dim=1)
        mixture = (post * ATOMS.to(x.dtype)).sum(1)
        x0 = torch.where(cond == 2, mixture, ATOMS.to(x.dtype)[cond.clamp(max=1)]).view(-1, 1, 1, 1)
        return (x - alpha * x0) / sigma

    return net


def recipe(sampler="ancestral", label_dropout=0.1, **data):
    return {"schedule": {"name": "linear", "timesteps": T}, "parameterization": {"name": "eps"},
            "variance": {"name": "fixed-small"}, "weighting": {"name": "simple"}, "sampler": {"name": sampler},
            "data": {"shape": [1, 2, 2], "levels": 256, "num_classes": 2, **data},
            "conditioning": {"labels": True, "label_dropout": label_dropout}}


LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])


def gaussian_samplers():
    names = ["ancestral", "ddim", "respaced", "dpm-solver++", "heun", "langevin-pc"]
    return [n for n in names if n in registry("sampler")]


@pytest.mark.parametrize("sampler", gaussian_samplers())
@pytest.mark.parametrize("w", [0.0, 1.5])
def test_samples_of_class_c_land_on_c_s_atom_with_every_sampler(sampler, w):
    model = gendiff.build(recipe(sampler), model=atoms_net())
    args = {"steps": 20} if sampler in ("ddim", "respaced", "dpm-solver++", "heun") else {}
    chosen = construct(registry("sampler").get(sampler), "sampler", args)
    x = model.sample(8, generator=torch.Generator().manual_seed(0), sampler=chosen, cond=LABELS, guidance=w).double()
    target = ATOMS[LABELS].view(-1, 1, 1, 1).expand_as(x)
    assert (x - target).abs().max() < 0.05, (x - target).abs().max()


def test_guidance_zero_is_the_conditional_model_with_the_label_given_bit_for_bit():
    net = atoms_net()
    conditional = gendiff.build(recipe(), model=net)
    a = conditional.sample(8, generator=torch.Generator().manual_seed(3), cond=LABELS, guidance=0.0)
    # the same network with the labels wired in, as an unconditional model: no guidance anywhere
    plain = gendiff.build({**recipe(), "conditioning": {}, "data": {"shape": [1, 2, 2]}},
                          model=lambda x, t: net(x, t, LABELS[: len(x)]))
    b = plain.sample(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_guidance_is_applied_once_in_one_doubled_batch():
    calls = []
    net = atoms_net(calls)
    model = gendiff.build(recipe(), model=net)
    view = model.conditioned(LABELS, 2.0)
    x = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((8,), 40)
    calls.clear()
    head, var = view.network(x, t)
    assert calls == [16] and var is None  # one call on the labels and the null label together
    guided = 3.0 * net(x, t, LABELS) - 2.0 * net(x, t, torch.full((8,), 2))  # (1 + w) eps(c) - w eps(null)
    assert torch.allclose(head, guided, rtol=1e-12, atol=1e-12)
    calls.clear()
    model.sample(8, sampler=construct(registry("sampler").get("ddim"), "sampler", {"steps": 5}), cond=LABELS,
                 guidance=2.0)
    assert calls == [16] * 5


def test_guidance_moves_samples_away_from_the_unconditional_prediction():
    """The guided x0_hat is (1 + w) x0(c) - w x0(null): at a point between the atoms it overshoots
    class c's atom by w times the distance to the mixture's estimate."""
    model = gendiff.build(recipe(), model=atoms_net())
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    t = torch.full((2,), T)
    for w in (0.0, 1.0, 3.0):
        x0 = model.conditioned(torch.tensor([0, 1]), w).predict(x, t).x0
        mixture = 0.0  # symmetric atoms, x = 0: the null label's estimate is their mean
        expect = (1 + w) * ATOMS - w * mixture
        assert torch.allclose(x0.flatten(1).mean(1), expect, atol=1e-9)


def test_label_dropout_uses_the_null_label_at_its_rate_and_splits_across_processes():
    model = gendiff.build(recipe(label_dropout=0.25), model=atoms_net())
    labels = torch.randint(0, 2, (4000,), generator=torch.Generator().manual_seed(0))
    x0 = ATOMS[labels].view(-1, 1, 1, 1).expand(-1, 1, 2, 2).float()
    terms = model.loss_terms(x0, generator=torch.Generator().manual_seed(1), cond=labels)
    dropped = terms.cond == 2
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    assert torch.equal(terms.cond[~dropped], labels[~dropped])
    # two processes, each with rows rank::2, draw exactly the single process's times, noise and drops
    for rank in (0, 1):
        part = model.loss_terms(x0[rank::2], generator=torch.Generator().manual_seed(1), share=(rank, 2),
                                cond=labels[rank::2])
        assert torch.equal(part.cond, terms.cond[rank::2]) and torch.equal(part.t, terms.t[rank::2])
        assert torch.equal(part.noise, terms.noise[rank::2])


def test_unconditional_recipes_take_no_labels_and_bad_labels_are_refused():
    net = atoms_net()
    uncond = gendiff.build({**recipe(), "conditioning": {}, "data": {"shape": [1, 2, 2]}},
                           model=lambda x, t: net(x, t, torch.zeros(len(x), dtype=torch.long)))
    with pytest.raises(ConditioningError, match="not class-conditional"):
        uncond.sample(2, cond=torch.tensor([0, 1]))
    with pytest.raises(ConditioningError, match="needs a class-conditional model"):
        uncond.sample(2, guidance=1.0)
    model = gendiff.build(recipe(), model=net)
    with pytest.raises(ConditioningError, match=r"labels must lie in 0..1 \(or 2, the null label\)"):
        model.sample(2, cond=torch.tensor([0, 3]))
    with pytest.raises(ConditioningError, match="3 labels for a batch of 2"):
        model.sample(2, cond=torch.tensor([0, 1, 1]))
    with pytest.raises(ConditioningError, match="integers"):
        model.sample(2, cond=torch.tensor([0.5, 1.0]))
    for w in (-1.0, math.inf, math.nan):
        with pytest.raises(ConditioningError, match="finite number >= 0"):
            model.sample(2, guidance=w)
    with pytest.raises(gendiff.errors.GendiffError, match="training needs the labels"):
        model.training_loss(torch.zeros(2, 1, 2, 2))


def test_guidance_without_a_learned_null_label_warns():
    model = gendiff.build(recipe(label_dropout=0.0), model=atoms_net())
    with pytest.warns(GuidanceWarning, match="null label was never learned"):
        model.sample(2, cond=torch.tensor([0, 1]), guidance=1.0)


@pytest.mark.parametrize("table, problem", [
    ({"label_dropout": 0.1}, "conditioning.label_dropout: needs conditioning.labels = true"),
    ({"labels": True, "guidance": 2.0}, "conditioning.guidance: guidance needs the null label"),
    ({"labels": True, "label_dropout": 1.0}, "conditioning.label_dropout: must be < 1"),
    ({"labels": True, "label_dropout": -0.1}, "conditioning.label_dropout: must be >= 0"),
    ({"labels": "yes"}, "conditioning.labels: expected a boolean"),
    ({"labels": True, "bogus": 1}, "conditioning.bogus: unknown key"),
])
def test_bad_conditioning_tables_are_reported_by_path(table, problem):
    bad = recipe()
    bad["conditioning"] = table
    with pytest.raises(RecipeError) as err:
        gendiff.build(bad, model=atoms_net())
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_conditioning_needs_data_with_classes_and_a_backbone_that_takes_them(base_recipe):
    from gendiff.backbones import Backbone
    from gendiff.plugins import create_plugin_system
    import types

    with pytest.raises(RecipeError, match="data.num_classes"):
        gendiff.build({**recipe(), "data": {"shape": [1, 2, 2]}}, model=atoms_net())

    class Plain(Backbone):
        name = "plain"

        def __init__(self, in_channels, out_channels, image_size):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, out_channels, 1)

        def forward(self, x, t):
            return self.conv(x)

    plugin = types.ModuleType("p")
    impl = lambda: [Plain]  # noqa: E731
    impl.__name__ = "gendiff_register_backbones"
    plugin.gendiff_register_backbones = gendiff.hookimpl(impl)
    system = create_plugin_system(extra_plugins=[("p", plugin)], autoload=False)
    base_recipe.update(backbone={"name": "plain"}, data={"name": "digits"}, conditioning={"labels": True})
    with pytest.raises(RecipeError, match="backbone 'plain' does not take class labels"):
        gendiff.build(base_recipe, plugins=system)
    base_recipe["backbone"] = {"name": "unet", "channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                               "attn_resolutions": [4], "dropout": 0.0}
    model = gendiff.build(base_recipe)
    assert model.conditioning == Conditioning(10, 0.0, 0.0) and model.backbone.label_emb.num_embeddings == 11


def test_the_unet_uses_its_labels():
    model = gendiff.build({"schedule": {"name": "linear", "timesteps": 50}, "parameterization": {"name": "eps"},
                           "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"},
                           "sampler": {"name": "ancestral"},
                           "backbone": {"name": "unet", "channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                        "attn_resolutions": [4], "dropout": 0.0},
                           "data": {"shape": [1, 8, 8], "levels": 17, "num_classes": 3},
                           "conditioning": {"labels": True, "label_dropout": 0.1}})
    with torch.no_grad():  # the zero-initialised output layers would hide everything
        for p in model.backbone.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 10)
    out = [model.predict(x, t, cond=torch.full((3,), c)).eps for c in range(4)]
    assert all(not torch.allclose(out[i], out[j]) for i in range(4) for j in range(i))
    assert torch.equal(model.backbone(x, t), model.backbone(x, t, torch.full((3,), 3)))  # None = null label
