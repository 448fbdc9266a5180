"""The installed third-party package plugins/gendiff-langevin, used the way a user would:
a recipe that names its schedule and sampler, `gendiff run`, then `gendiff sample --sampler`."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("gendiff_langevin", reason="install it with: pip install ./plugins/gendiff-langevin")

from gendiff.cli import app  # noqa: E402
from gendiff.errors import IncompatibleComponentsError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_run_and_sample_with_the_plugins_components(tmp_path):
    from gendiff.recipe import tomllib

    import tomli_w

    runner = CliRunner()
    raw = tomllib.loads((ROOT / "recipes" / "quickstart.toml").read_text())
    raw["schedule"] = {"name": "sigmoid", "timesteps": 50}  # both components from the plugin
    raw["sampler"] = {"name": "langevin-pc", "snr": 0.1}
    recipe = tmp_path / "langevin.toml"
    recipe.write_text(tomli_w.dumps(raw))
    res = runner.invoke(app, ["run", str(recipe), "--set", "train.steps=5", "--set", "train.batch_size=16",
                              "--set", "train.sample_every=0", "--set", "eval.samples=8", "--set", "eval.metrics=[]",
                              "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    recorded = (tmp_path / "run" / "recipe.toml").read_text()
    assert 'schedule = "langevin 0.1.0"' in recorded and 'sampler = "langevin 0.1.0"' in recorded
    res = runner.invoke(app, ["sample", str(tmp_path / "run"), "--n", "4", "--sampler", "langevin-pc",
                              "--out", str(tmp_path / "s"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s" / "samples.npz")["samples"].shape == (4, 8, 8, 1)


def test_the_langevin_sampler_refuses_a_masking_model():
    import gendiff

    with pytest.raises(IncompatibleComponentsError) as err:
        gendiff.build({
            "schedule": {"name": "masking"}, "parameterization": {"name": "x0-logits"},
            "variance": {"name": "categorical"}, "weighting": {"name": "vlb"},
            "sampler": {"name": "langevin-pc"}, "data": {"shape": [1, 2, 2], "levels": 2},
        }, model=lambda x, t: x.new_zeros(len(x), 2, 2, 2))
    assert "sampler 'langevin-pc'" in str(err.value) and "schedule 'masking'" in str(err.value)
