"""gendiff.build: recipes in, models out, and every bad input refused with a clear message."""

import pytest
import torch

import gendiff
from gendiff.errors import GendiffError, IncompatibleComponentsError, RecipeError


def test_build_from_a_dict_and_from_a_toml_file(base_recipe, tmp_path):
    model = gendiff.build(base_recipe)
    assert model.backbone.name == "unet" and model.levels == 17 and model.data_shape == (1, 8, 8)
    path = tmp_path / "r.toml"
    path.write_text("""
[schedule]
name = "cosine"
timesteps = 50
[parameterization]
name = "v"
[variance]
name = "learned-range"
[weighting]
name = "hybrid"
vlb_weight = 0.01
[sampler]
name = "ancestral"
clip_x0 = false
[backbone]
name = "unet"
channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attn_resolutions = []
[data]
name = "digits"
""")
    model = gendiff.build(path)
    assert model.schedule.name == "cosine" and model.weighting.vlb_weight == 0.01
    assert model.levels == 17 and model.data_shape == (1, 8, 8)
    assert model.backbone.conv_out.out_channels == 2
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert torch.isfinite(model.training_loss(x))
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)


def test_the_papers_cifar10_recipe_builds_the_35_7m_model():
    model = gendiff.build("recipes/ddpm_cifar10.toml")
    n = sum(p.numel() for p in model.backbone.parameters())
    assert abs(n - 35.7e6) < 0.1e6
    assert (model.schedule.name, model.parameterization.name, model.variance.name, model.weighting.name) == (
        "linear", "eps", "fixed-large", "simple")
    assert model.timesteps == 1000 and model.levels == 256 and model.data_shape == (3, 32, 32)


def problems_of(recipe, **kw):
    with pytest.raises(RecipeError) as err:
        gendiff.build(recipe, **kw)
    return err.value.problems, str(err.value)


def test_unknown_names_are_reported_with_path_and_alternatives(base_recipe):
    base_recipe["schedule"]["name"] = "linaer"
    base_recipe["sampler"]["name"] = "ddim-typo"
    base_recipe["backbone"]["name"] = "resnet"
    problems, msg = problems_of(base_recipe)
    assert len(problems) == 3
    (unknown,) = [p for p in problems if p.startswith("schedule.name: unknown schedule 'linaer'")]
    # every built-in is listed (whatever third-party schedules are installed besides)
    assert all(name in unknown for name in ("cosine", "linear", "masking", "quadratic", "vp-cosine"))
    assert any(p.startswith("sampler.name: unknown sampler 'ddim-typo'") for p in problems)
    assert any(p.startswith("backbone.name: unknown backbone 'resnet'") and "unet" in p for p in problems)


def test_wrong_and_bad_arguments_are_all_reported_at_once(base_recipe):
    base_recipe["schedule"]["beta_ed"] = 0.01
    base_recipe["variance"]["scale"] = 2
    base_recipe["weighting"] = {"name": "hybrid", "vlb_weight": -1}
    problems, msg = problems_of(base_recipe)
    assert len(problems) == 3
    assert any("schedule: schedule 'linear': unknown argument(s) 'beta_ed'; it accepts timesteps, beta_start, beta_end" in p
               for p in problems)
    assert any("variance 'fixed-large': unknown argument(s) 'scale'; it accepts no arguments" in p for p in problems)
    assert any("weighting 'hybrid': vlb_weight must be a non-negative number" in p for p in problems)


def test_structural_problems_are_collected_by_path(base_recipe):
    del base_recipe["parameterization"]
    base_recipe["variance"] = "fixed-large"
    base_recipe["weighting"] = {"vlb_weight": 1}
    base_recipe["shedule"] = {"name": "linear"}
    base_recipe["data"] = {"shape": [1, 8], "levels": 1, "flip": True}
    problems, msg = problems_of(base_recipe)
    expected = [
        "shedule: unknown table",
        "parameterization: missing table",
        "variance: expected a table, got a string",
        "weighting.name: expected the registry name",
        "data.flip: unknown key",
        "data.shape: expected [channels, height, width]",
        "data.levels: expected an integer K >= 2",
    ]
    for e in expected:
        assert any(p.startswith(e) for p in problems), (e, problems)
    assert "7 problem(s)" in msg


def test_a_dataset_recipe_may_not_also_set_shape(base_recipe):
    base_recipe["data"] = {"name": "digits", "shape": [1, 8, 8]}
    problems, _ = problems_of(base_recipe)
    assert problems == ["data.shape: given by the dataset 'digits'; remove it or remove data.name"]
    base_recipe["data"] = {"name": "digits", "test_size": 0}
    problems, _ = problems_of(base_recipe)
    assert problems[0].startswith("data: dataset 'digits': test_size must be an integer")


def test_bad_backbone_configuration_names_the_component(base_recipe):
    base_recipe["backbone"]["attn_resolutions"] = [16]
    problems, _ = problems_of(base_recipe)
    assert problems[0].startswith("backbone: backbone 'unet': attn_resolutions [16] do not occur")
    base_recipe["backbone"]["attn_resolutions"] = [4]
    base_recipe["backbone"]["in_channels"] = 3
    problems, _ = problems_of(base_recipe)
    assert "'in_channels' are set by gendiff" in problems[0]


def test_missing_required_argument_is_named(base_recipe):
    from gendiff.plugins import create_plugin_system
    from gendiff.schedules import GaussianSchedule
    import types

    class NeedsStart(GaussianSchedule):
        name = "needs-start"

        def __init__(self, start, timesteps=10):
            super().__init__(timesteps)
            self.start = start

        def betas(self):
            return torch.full((self.timesteps,), self.start, dtype=torch.float64)

    plugin = types.ModuleType("p")
    plugin.gendiff_register_schedules = gendiff.hookimpl(lambda: [NeedsStart])
    plugin.gendiff_register_schedules.__name__ = "gendiff_register_schedules"
    system = create_plugin_system(extra_plugins=[("p", plugin)], autoload=False)
    base_recipe["schedule"] = {"name": "needs-start"}
    with pytest.raises(RecipeError, match="schedule 'needs-start': missing a required argument: 'start'"):
        gendiff.build(base_recipe, plugins=system)


def test_incompatible_mix_names_both_components(base_recipe):
    base_recipe["weighting"] = {"name": "hybrid"}
    with pytest.raises(IncompatibleComponentsError) as err:
        gendiff.build(base_recipe)
    msg = str(err.value)
    assert "weighting 'hybrid'" in msg and "variance 'fixed-large'" in msg and "learned" in msg


@pytest.mark.parametrize("variance", ["learned", "learned-range"])
@pytest.mark.parametrize("weighting", ["simple", "mse-mu", "min-snr", "p2"])
def test_a_learned_variance_needs_a_loss_that_trains_it(base_recipe, variance, weighting):
    """simple, mse-mu (and the SNR weightings of the eps error) give the variance head no gradient:
    it would stay at its initial value at every t, so the mix is refused naming both components."""
    base_recipe["variance"] = {"name": variance}
    base_recipe["weighting"] = {"name": weighting}
    with pytest.raises(IncompatibleComponentsError) as err:
        gendiff.build(base_recipe)
    msg = str(err.value)
    assert f"variance '{variance}'" in msg and f"weighting '{weighting}'" in msg and "trains-variance" in msg
    for trains in ("vlb", "hybrid"):  # the losses that train it are accepted
        base_recipe["weighting"] = {"name": trains}
        model = gendiff.build(base_recipe)
        x = torch.rand(4, 1, 8, 8) * 2 - 1
        model.training_loss(x, generator=torch.Generator().manual_seed(0)).backward()
        assert model.backbone.conv_out.weight.grad[1:].abs().sum() > 0  # the variance head moves


def test_a_model_that_cannot_output_a_learned_variance_is_refused(base_recipe):
    del base_recipe["backbone"]
    base_recipe["variance"] = {"name": "learned"}
    base_recipe["weighting"] = {"name": "vlb"}
    with pytest.raises(IncompatibleComponentsError) as err:
        gendiff.build(base_recipe, model=lambda x, t: torch.zeros_like(x))  # only 1 channel out
    msg = str(err.value)
    assert "variance 'learned'" in msg and "parameterization 'eps'" in msg and "(1, 2, 8, 8)" in msg


def test_a_registered_backbone_with_a_fixed_output_is_refused(base_recipe):
    from gendiff.backbones import Backbone
    from gendiff.plugins import create_plugin_system
    import types

    class Fixed(Backbone):
        name = "fixed-out"

        def __init__(self, in_channels, out_channels, image_size):
            super().__init__()
            if out_channels != in_channels:
                raise ValueError(f"it can only output {in_channels} channel(s), not {out_channels}")
            self.conv = torch.nn.Conv2d(in_channels, out_channels, 1)

        def forward(self, x, t):
            return self.conv(x)

    plugin = types.ModuleType("p")
    impl = lambda: [Fixed]  # noqa: E731
    impl.__name__ = "gendiff_register_backbones"
    plugin.gendiff_register_backbones = gendiff.hookimpl(impl)
    system = create_plugin_system(extra_plugins=[("p", plugin)], autoload=False)
    base_recipe["backbone"] = {"name": "fixed-out"}
    base_recipe["variance"] = {"name": "learned-range"}
    base_recipe["weighting"] = {"name": "hybrid"}
    with pytest.raises(RecipeError) as err:
        gendiff.build(base_recipe, plugins=system)
    msg = str(err.value)
    assert "backbone 'fixed-out'" in msg and "variance 'learned-range'" in msg and "not 2" in msg


def test_explicit_model_excludes_a_backbone_table(base_recipe):
    problems, _ = problems_of(base_recipe, model=lambda x, t: x)
    assert problems == ["backbone: an explicit model was given, so the recipe must not name a backbone"]


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="no recipe file at"):
        gendiff.build(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[schedule\nname = 1\n")
    with pytest.raises(RecipeError, match="not valid TOML.*line 1"):
        gendiff.build(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GendiffError, match="not valid TOML"):
        gendiff.build(binary)


def test_backbone_argument_mistakes_are_collected_with_the_rest(base_recipe):
    base_recipe["backbone"]["chanels"] = 64
    base_recipe["schedule"]["timesteps"] = "many"
    base_recipe["sampler"]["clip_x0"] = 1
    problems, msg = problems_of(base_recipe)
    assert len(problems) == 3
    assert any(p.startswith("backbone: backbone 'unet': unknown argument(s) 'chanels'") for p in problems)
    assert any("argument 'timesteps' expects an integer" in p for p in problems)
    assert any("argument 'clip_x0' expects a boolean" in p for p in problems)
