"""A third-party plugin written only against the public hooks (tests/plugin_example, a package like
plugins/gendiff-langevin) registers a class-conditional backbone, a min-SNR-style weighting, a
metric and a logger; discovered through its entry point, it runs end to end through
``gendiff run``, ``gendiff sample`` and ``gendiff eval NAME``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from gendiff import testing

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(__file__).resolve().parent / "plugin_example"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The package installed the way pip would leave it: its module and a *.dist-info folder
    with the entry point, on a folder that PYTHONPATH adds."""
    folder = tmp_path_factory.mktemp("site")
    shutil.copytree(PACKAGE / "src" / "gendiff_example", folder / "gendiff_example")
    info = folder / "gendiff_example-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gendiff-example\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[gendiff]\nexample = gendiff_example\n")
    return folder


def gendiff(site, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    env.pop("GENDIFF_DISABLE_PLUGINS", None)
    env.pop("GENDIFF_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "gendiff", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def test_the_plugin_is_discovered_and_its_components_conform(site, monkeypatch):
    from gendiff.plugins import create_plugin_system

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("GENDIFF_DISABLE_PLUGINS", raising=False)
    system = create_plugin_system()
    info = system.plugins["example"]
    assert info.version == "0.1.0" and info.error is None
    assert info.components == {"weighting": ["soft-min-snr"], "backbone": ["example-cond-net"], "metric": ["mean-pixel"]}
    import gendiff_example as ex

    testing.check_backbone(ex.ConditionalNet)
    testing.check_weighting(ex.SoftMinSNR())
    testing.check_metric(ex.MeanPixel())


def test_run_sample_and_eval_with_the_plugin(site, tmp_path):
    recipe = {
        "schedule": {"name": "linear", "timesteps": 20}, "parameterization": {"name": "eps"},
        "variance": {"name": "fixed-large"}, "weighting": {"name": "soft-min-snr", "gamma": 5.0},
        "sampler": {"name": "ddim", "steps": 10}, "backbone": {"name": "example-cond-net", "width": 16},
        "data": {"name": "digits"}, "conditioning": {"labels": True, "label_dropout": 0.2, "guidance": 1.0},
        "train": {"steps": 4, "batch_size": 32, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 2,
                  "sample_every": 2, "sample_grid": 10, "log_every": 1, "precision": "fp32", "device": "cpu"},
        "eval": {"samples": 20, "metrics": ["mean-pixel", "nll"], "nll_examples": 8},
    }
    path = tmp_path / "example.toml"
    path.write_text(tomli_w.dumps(recipe))
    run_dir = tmp_path / "run"
    ran = gendiff(site, "run", path, "--out", run_dir, "--no-progress")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "mean-pixel" in ran.stdout and "bits/dim" in ran.stdout
    resolved = (run_dir / "recipe.toml").read_text()
    assert 'backbone = "example 0.1.0"' in resolved and 'weighting = "example 0.1.0"' in resolved
    # the logger saw every event, in order
    events = [json.loads(line) for line in (run_dir / "example-events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert [(e["step"], e["path"]) for e in events if e["event"] == "checkpoint"] == [(2, "step-2"), (4, "step-4")]
    assert [(e["step"], e["path"]) for e in events if e["event"] == "samples"] == [
        (2, "step-2.png"), (4, "step-4.png"), (4, "final.png")]
    summary = json.loads((run_dir / "example-summary.json").read_text())
    assert summary["trained_steps"] == 4 and set(summary["evaluations"]) == {"mean-pixel", "nll"}
    metric = json.loads((run_dir / "eval" / "mean-pixel.json").read_text())
    assert 0 <= metric["samples"] <= 255 and metric["difference"] == pytest.approx(abs(metric["samples"] - metric["test"]))
    # sampling the conditional run (classes in turn, the recipe's guidance) with the plugin's network
    sampled = gendiff(site, "sample", run_dir, "--n", 6, "--out", tmp_path / "s", "--no-progress")
    assert sampled.returncode == 0, sampled.stdout + sampled.stderr
    assert np.load(tmp_path / "s" / "samples.npz")["samples"].shape == (6, 8, 8, 1)
    # the plugin's metric as a command of its own
    evaluated = gendiff(site, "eval", "mean-pixel", run_dir, "--no-progress")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    again = json.loads((run_dir / "eval" / "mean-pixel.json").read_text())
    assert again["samples"] == metric["samples"] and again["checkpoint"].endswith("step-4")
