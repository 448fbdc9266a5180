"""DDIM, respaced ancestral and DPM-Solver++(2M): agreement with Algorithm 2 where theory says
they coincide, exact behaviour on the two-atom model, and refusal of what they cannot serve."""

import pytest
import torch

import gendiff
from gendiff.errors import IncompatibleComponentsError
from gendiff.samplers import DDIM, Ancestral, DPMSolverPP, Respaced, time_grid
from gendiff.schedules import LinearSchedule
from gendiff.testing import tiny_model


def test_time_grid():
    assert time_grid(1000, 5) == [1000, 750, 500, 251, 1]
    assert time_grid(10, 50) == list(range(10, 0, -1))
    with pytest.raises(ValueError):
        time_grid(10, 0)


@pytest.mark.parametrize("variance, sampler", [
    ("fixed-small", DDIM(steps=50, eta=1.0, clip_x0=True)),
    ("fixed-small", Respaced(steps=50, variance="small")),
    ("fixed-large", Respaced(steps=50, variance="large")),
])
def test_with_every_step_they_are_algorithm_2(variance, sampler):
    model = tiny_model(variance=variance, timesteps=50)
    shape = (4, 2, 4, 4)
    ref = Ancestral(clip_x0=True).sample(model, shape, torch.Generator().manual_seed(0))
    got = sampler.sample(model, shape, torch.Generator().manual_seed(0))
    assert torch.allclose(got, ref, atol=1e-4)


def test_ddim_eta_0_is_deterministic_given_x_T():
    model = tiny_model(timesteps=50)
    a = DDIM(steps=10).sample(model, (3, 2, 4, 4), torch.Generator().manual_seed(1))
    b = DDIM(steps=10).sample(model, (3, 2, 4, 4), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def two_atom_model(sampler):
    abar = LinearSchedule().tables["abar"]

    def denoiser(x, t):
        a = abar.to(x.dtype)[t].view(-1, 1, 1, 1)
        return torch.tanh(a.sqrt() * x / (1 - a))

    return gendiff.build({
        "schedule": {"name": "linear"}, "parameterization": {"name": "x0"}, "variance": {"name": "fixed-small"},
        "weighting": {"name": "simple"}, "sampler": sampler, "data": {"shape": [1, 4, 4], "levels": 2},
    }, model=denoiser)


@pytest.mark.parametrize("sampler", [{"name": "ddim", "steps": 20}, {"name": "dpm-solver++", "steps": 10},
                                     {"name": "respaced", "steps": 20}])
def test_few_steps_reach_the_two_atoms_in_equal_proportion(sampler):
    model = two_atom_model(sampler)
    x = model.sample(2000, generator=torch.Generator().manual_seed(0))
    assert (x.abs() > 0.9).float().mean() > 0.97  # samples land on the atoms
    assert abs((x > 0).double().mean().item() - 0.5) < 0.03


@pytest.mark.parametrize("name", ["ddim", "respaced", "dpm-solver++"])
def test_gaussian_only_samplers_refuse_masking(name):
    with pytest.raises(IncompatibleComponentsError) as err:
        gendiff.build({
            "schedule": {"name": "masking"}, "parameterization": {"name": "x0-logits"},
            "variance": {"name": "categorical"}, "weighting": {"name": "vlb"},
            "sampler": {"name": name}, "data": {"shape": [1, 2, 2], "levels": 2},
        }, model=lambda x, t: x.new_zeros(len(x), 2, 2, 2))
    assert f"sampler '{name}'" in str(err.value) and "schedule 'masking'" in str(err.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="eta"):
        DDIM(eta=-1)
    with pytest.raises(ValueError, match="variance"):
        Respaced(variance="medium")
    with pytest.raises(ValueError, match="steps"):
        DPMSolverPP(steps=0)


def test_sample_command_with_a_fast_sampler(quick_run, tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from gendiff.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["sample", str(quick_run), "--sampler", "ddim", "--steps", "10", "--n", "4",
                              "--out", str(tmp_path / "s"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s" / "samples.npz")["samples"].shape == (4, 8, 8, 1)
    bad = runner.invoke(app, ["sample", str(quick_run), "--sampler", "ancestral", "--steps", "10", "--n", "2",
                              "--out", str(tmp_path / "t")])
    assert bad.exit_code == 1 and "sampler 'ancestral' takes no steps" in " ".join(bad.output.split())


def test_steps_without_a_sampler_set_the_recipes_sampler(quick_run, tmp_path):
    """--steps alone changes the recipe's own sampler's steps (when it takes steps), and is the
    same draw as naming that sampler with those steps."""
    import numpy as np
    from typer.testing import CliRunner

    from gendiff.cli import app
    from gendiff.runs import choose_sampler, load_run

    model, _ = load_run(quick_run)
    own = model.recipe["sampler"]["name"]
    chosen = choose_sampler(model, steps=7)
    assert chosen.name == own and chosen.steps == 7
    runner = CliRunner()
    for folder, extra in (("a", []), ("b", ["--sampler", own])):
        res = runner.invoke(app, ["sample", str(quick_run), "--steps", "7", "--n", "3", "--no-progress",
                                  "--out", str(tmp_path / folder), *extra])
        assert res.exit_code == 0, res.output
    a, b = (np.load(tmp_path / f / "samples.npz")["samples"] for f in "ab")
    assert np.array_equal(a, b)
