"""The trainable-component contract: a component of any family that holds parameters is optimised
(with its own learning rate), averaged by the EMA, checkpointed under FAMILY/NAME, restored bit for
bit on resume and loaded for sampling; and its bad inputs are refused in one paragraph."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gendiff.checkpoint import CheckpointError
from gendiff.errors import RecipeError, TrainingError
from gendiff.runs import load_run
from gendiff.training import Trainer, prepare


def vdm_recipe(steps=6, **schedule):
    return {"schedule": {"name": "vdm-learned", "timesteps": 40, "features": 16, "lr": 5e-3, **schedule},
            "parameterization": {"name": "eps"}, "variance": {"name": "fixed-small"}, "weighting": {"name": "vdm"},
            "sampler": {"name": "ancestral"}, "time_sampler": {"name": "low-discrepancy"},
            "backbone": {"name": "unet", "channels": 8, "channel_mult": [1], "num_res_blocks": 1,
                         "attn_resolutions": [], "dropout": 0.0, "norm_groups": 4, "fourier_features": [3]},
            "data": {"name": "digits"},
            "train": {"steps": steps, "batch_size": 8, "checkpoint_every": 3, "sample_every": 0, "log_every": 3,
                      "warmup_steps": 0, "ema_decay": 0.5, "precision": "fp32", "device": "cpu"},
            "eval": {"samples": 4}}


def train(recipe, folder: Path, stop_after=None, resume=False):
    setup = prepare(recipe)
    trainer = Trainer(setup, folder, progress=False)
    return setup, trainer, trainer.train(resume=resume, stop_after=stop_after)


def test_a_learned_schedule_trains_is_checkpointed_and_resumes_bit_for_bit(tmp_path):
    setup, trainer, summary = train(vdm_recipe(), tmp_path / "whole")
    initial = prepare(vdm_recipe()).model.schedule.state_dict()
    final = setup.model.schedule.state_dict()
    # (l1's scale cancels in the rescaling to the endpoints, so its gradient is only rounding at the start)
    for key in ("ends", "l1_b", "l2_w", "l2_b", "l3_w"):
        assert not torch.equal(initial[key], final[key]), f"schedule/{key} must learn"
    assert trainer.optimizer.param_groups[1]["lr"] == pytest.approx(5e-3)  # [schedule] lr
    ckpt = tmp_path / "whole" / "checkpoints" / "step-6"
    weights, ema = load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))
    for name, value in final.items():
        assert torch.equal(weights[f"schedule/{name}"], value)
        assert f"schedule/{name}" in ema
    assert not torch.equal(ema["schedule/ends"], final["ends"])  # averaged
    assert "conv_in.weight" in weights  # the backbone keeps its own names
    # interrupted after 3 steps, resumed: the same losses and the same parameters, bit for bit
    _, _, first = train(vdm_recipe(), tmp_path / "split", stop_after=3)
    setup2, _, second = train(vdm_recipe(), tmp_path / "split", resume=True)
    assert first.losses + second.losses == summary.losses
    for name, value in setup2.model.state_dict().items():
        assert torch.equal(value, setup.model.state_dict()[name]), name
    # loaded for sampling: the EMA schedule, and tables computed from the loaded parameters
    model, _ = load_run(tmp_path / "whole")
    assert torch.equal(model.schedule.ends, ema["schedule/ends"])
    fresh = prepare(vdm_recipe()).model.schedule
    fresh.load_state_dict({k[len("schedule/"):]: v for k, v in ema.items() if k.startswith("schedule/")})
    for key, table in fresh.tables.items():
        assert torch.equal(model.schedule.tables[key], table), key
    assert model.sample(2).shape == (2, 1, 8, 8)


def test_a_checkpoint_without_the_schedules_tensors_is_refused_by_name(tmp_path):
    train(vdm_recipe(steps=3), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "step-3"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name in ("model.safetensors", "ema.safetensors"):
        kept = {k: v for k, v in load_file(str(ckpt / name)).items() if not k.startswith("schedule/")}
        save_file(kept, str(ckpt / name))
        manifest["sha256"][name] = hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"tensor\(s\) missing from the checkpoint: schedule/"):
        load_run(tmp_path / "run")


def test_learning_rates_for_families_without_parameters_or_for_the_backbone_are_refused():
    recipe = vdm_recipe()
    recipe["schedule"] = {"name": "vdm-fixed", "lr": 1e-3}
    with pytest.raises(RecipeError, match="schedule.lr: schedule 'vdm-fixed' has no parameters to optimise"):
        prepare(recipe)
    recipe = vdm_recipe()
    recipe["backbone"]["lr"] = 1e-3
    recipe["schedule"]["lr"] = -1.0
    with pytest.raises(RecipeError) as info:
        prepare(recipe)
    assert "backbone.lr: the backbone's learning rate is train.lr" in str(info.value)
    assert "schedule.lr: expected the learning rate" in str(info.value)


def test_parameters_that_the_loss_cannot_reach_are_refused_before_training(tmp_path):
    from torch import nn

    from gendiff.parameterizations import EpsParameterization
    from gendiff.testing.models import testing_plugin_system

    class Idle(EpsParameterization, nn.Module):  # a plugin's parameterization whose parameter nothing uses
        name = "idle-eps"

        def __init__(self):
            nn.Module.__init__(self)
            self.unused = nn.Parameter(torch.zeros(3))

    system = testing_plugin_system({"parameterization": [Idle]})
    recipe = vdm_recipe()
    recipe["parameterization"] = {"name": "idle-eps"}
    recipe["schedule"] = {"name": "vdm-fixed", "timesteps": 40}
    with pytest.raises(TrainingError, match="parameterization 'idle-eps' has parameters, but the training loss of "
                                            "weighting 'vdm' gives them no gradient"):
        prepare(recipe, plugins=system)
    assert not (tmp_path / "run").exists()


def test_a_schedule_that_goes_bad_in_training_stops_it_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from gendiff.schedules import VDMLearned

    calls = {"n": 0}
    original = VDMLearned.check_parameters

    def failing(self):
        calls["n"] += 1
        return "schedule 'vdm-learned' is no longer increasing: (test)" if calls["n"] >= 4 else original(self)

    monkeypatch.setattr(VDMLearned, "check_parameters", failing)
    with pytest.raises(TrainingError) as info:
        train(vdm_recipe(), tmp_path / "run")
    text = str(info.value)
    assert "after the update of step 4: schedule 'vdm-learned' is no longer increasing" in text
    assert "the last good checkpoint, step 3, is untouched" in text
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-3"]


def test_a_resume_that_changes_the_schedules_architecture_is_refused_by_key(tmp_path):
    train(vdm_recipe(steps=3), tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints" / "step-3").iterdir()}
    with pytest.raises(TrainingError, match=r"in 1 key\(s\) that give the weights their meaning: "
                                            r"schedule.features: 16 -> 32"):
        train(vdm_recipe(steps=6, features=32), tmp_path / "run", resume=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints" / "step-3").iterdir()}
    assert after == before and sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-3"]


def _cli_run(recipe_path: Path, out: Path, *extra: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gendiff", "run", str(recipe_path), "--out", str(out), "--no-progress",
                             *extra], cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_a_learned_schedule_survives_sigkill_and_resumes_bit_for_bit(tmp_path):
    """The process is killed (SIGKILL) after its first checkpoint, mid-training; the resumed run's
    backbone, schedule and EMA equal the uninterrupted run's, bit for bit."""
    import signal
    import time

    import tomli_w

    recipe = vdm_recipe(steps=10)
    recipe["train"].update(checkpoint_every=2, log_every=1, keep_checkpoints=0)
    path = tmp_path / "vdm.toml"
    path.write_text(tomli_w.dumps(recipe))
    whole = _cli_run(path, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    out = tmp_path / "killed"
    proc = _cli_run(path, out)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step-4").is_dir() or (out / "metrics.jsonl").read_text().count("\n") < 5:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "step-10").exists()
    resumed = _cli_run(path, out, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-10" / name))
        b = load_file(str(out / "checkpoints" / "step-10" / name))
        assert a.keys() == b.keys() and any(k.startswith("schedule/") for k in a)
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    model, _ = load_run(out)  # and the tables are the loaded parameters' own
    fresh = prepare(recipe).model.schedule
    ema = load_file(str(out / "checkpoints" / "step-10" / "ema.safetensors"))
    fresh.load_state_dict({k[len("schedule/"):]: v for k, v in ema.items() if k.startswith("schedule/")})
    for key, table in fresh.tables.items():
        assert torch.equal(model.schedule.tables[key], table), key


def test_two_processes_train_a_learned_schedule_as_one_does(tmp_path):
    """DDP (gloo, torchrun through `--nproc-per-node 2`): the schedule's gradients, including the
    variance-minimising interior's (after_backward), are averaged over the ranks, so two processes
    with half the batch each train the same backbone and schedule as one process."""
    import tomli_w

    recipe = vdm_recipe(steps=4)
    recipe["train"].update(checkpoint_every=4, log_every=1)
    path = tmp_path / "vdm.toml"
    path.write_text(tomli_w.dumps(recipe))
    train(recipe, tmp_path / "one")
    proc = _cli_run(path, tmp_path / "two", "--nproc-per-node", "2")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    initial = prepare(recipe).model.schedule.state_dict()
    for name in ("model.safetensors", "ema.safetensors"):
        one = load_file(str(tmp_path / "one" / "checkpoints" / "step-4" / name))
        two = load_file(str(tmp_path / "two" / "checkpoints" / "step-4" / name))
        assert one.keys() == two.keys()
        for key in one:
            assert torch.allclose(one[key], two[key], atol=2e-5, rtol=1e-4), (name, key)
    one = load_file(str(tmp_path / "one" / "checkpoints" / "step-4" / "model.safetensors"))
    assert not torch.equal(one["schedule/l2_w"], initial["l2_w"])  # the interior did learn


def test_eval_nll_of_a_vdm_run_reports_both_bounds_and_refuses_zero_draws(tmp_path):
    from typer.testing import CliRunner

    from gendiff.cli import app

    train(vdm_recipe(steps=2), tmp_path / "run")
    runner = CliRunner()
    bad = runner.invoke(app, ["eval", "nll", str(tmp_path / "run"), "--draws", "0"], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "--draws" in bad.output and not (tmp_path / "run" / "eval").exists()
    ok = runner.invoke(app, ["eval", "nll", str(tmp_path / "run"), "--n", "6", "--draws", "4", "--no-progress"],
                       env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "continuous-time bound (4 t per image)" in " ".join(ok.output.split())
    report = json.loads((tmp_path / "run" / "eval" / "nll-test.json").read_text())
    bits, cont = report["bits_per_dim"], report["continuous_bits_per_dim"]
    # the T-step bound's breakdown: L_T + the T KL terms + the reconstruction term from z_0
    assert len(report["terms_bits_per_dim"]) == 40
    assert bits["total"] == pytest.approx(bits["prior_L_T"] + bits["sum_of_the_T_KL_terms"] + bits["reconstruction_L_0"])
    assert cont["draws_per_example"] == 4 and 0 < cont["stderr_from_t"] and 0 < cont["stderr"]
    assert cont["total"] == pytest.approx(cont["prior_L_T"] + cont["reconstruction_L_0"] + cont["diffusion"])
    # the same model, schedule and endpoints: both prior terms are one closed form, and the two
    # bounds estimate nearly the same thing (T = 40 grid steps against T -> infinity)
    assert cont["prior_L_T"] == pytest.approx(bits["prior_L_T"], rel=1e-5)
    assert cont["reconstruction_L_0"] == pytest.approx(bits["reconstruction_L_0"], rel=0.05)
    assert 0.7 < bits["total"] / cont["total"] < 1.5
