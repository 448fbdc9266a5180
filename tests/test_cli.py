"""The command line through typer's test runner: run, sample, recipe validate, and bad input."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gendiff.cli import app

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "recipes" / "quickstart.toml")
TINY = ["--set", "train.steps=3", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=2",
        "--set", "train.sample_every=0", "--set", "schedule.timesteps=20", "--set", "eval.samples=12",
        "--set", "backbone.channels=32", "--set", "train.log_every=1"]

runner = CliRunner()


class Result:
    """A CliRunner result with its output flattened (rich wraps long lines)."""

    def __init__(self, res):
        self.exit_code, self.raw = res.exit_code, res.output
        self.output = " ".join(res.output.split())


def invoke(*args):
    return Result(runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = invoke("run", QUICK, *TINY, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.raw
    return out, res.output


def test_run_trains_samples_and_reports(trained):
    out, output = trained
    assert "classifier: mean top-class probability" in output and "classes present" in output
    assert (out / "recipe.toml").is_file() and (out / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]
    assert (out / "eval" / "classifier.json").is_file()
    assert np.load(out / "samples" / "final" / "samples.npz")["samples"].shape == (12, 8, 8, 1)


def test_sample_writes_pngs_and_npz(trained, tmp_path):
    out, _ = trained
    res = invoke("sample", out, "--n", 5, "--out", tmp_path / "s", "--seed", 3, "--no-progress")
    assert res.exit_code == 0, res.output
    data = np.load(tmp_path / "s" / "samples.npz")["samples"]
    assert data.shape == (5, 8, 8, 1) and data.dtype == np.uint8
    assert len(list((tmp_path / "s").glob("[0-9].png"))) == 5
    again = invoke("sample", out, "--n", 5, "--out", tmp_path / "t", "--seed", 3, "--no-progress",
                   "--checkpoint", out / "checkpoints" / "step-3")
    assert again.exit_code == 0 and np.array_equal(np.load(tmp_path / "t" / "samples.npz")["samples"], data)
    other = invoke("sample", out, "--n", 2, "--out", tmp_path / "u", "--sampler", "ancestral", "--no-ema",
                   "--checkpoint", "step-2", "--no-progress")
    assert other.exit_code == 0, other.output


def test_run_refuses_an_existing_run_without_resume_and_resumes_with_it(trained):
    out, _ = trained
    res = invoke("run", QUICK, *TINY, "--out", out, "--no-progress")
    assert res.exit_code == 1 and "already holds a run" in res.output and "Traceback" not in res.output
    more = invoke("run", QUICK, *TINY[:-2], "--set", "train.steps=4", "--out", out, "--resume", "--no-progress")
    assert more.exit_code == 0, more.output
    assert "resuming from" in more.output


def test_recipe_validate_and_dry_run():
    res = invoke("recipe", "validate", ROOT / "recipes" / "ddpm_cifar10.toml")
    assert res.exit_code == 0 and "valid" in res.output and "35,746,307 parameters" in res.output
    dry = invoke("run", ROOT / "recipes" / "ddpm_cifar10.toml", "--dry-run")
    assert dry.exit_code == 0 and "dry run" in dry.output and "800,000 steps" in dry.output
    assert 'name = "cifar10"' in dry.output and "[gendiff" in dry.output


@pytest.mark.parametrize("args, message", [
    (["recipe", "validate", "nope.toml"], "no recipe file at nope.toml"),
    (["recipe", "validate", QUICK, "--set", "schedule.name=\"lin\""], "unknown schedule 'lin'"),
    (["run", QUICK, "--set", "train.lr=\"fast\"", "--dry-run"], "train.lr: expected a float"),
    (["sample", "no-such-run", "--out", "x"], "no run or checkpoint folder"),
    (["sample", ".", "--out", "x", "--sampler", "ddim-nope"], "unknown sampler"),
    (["run", QUICK, "--nproc-per-node", "0"], "--nproc-per-node must be at least 1, got 0"),
    (["run", QUICK, "--nproc-per-node", "3", "--dry-run"], "divisible by the number of processes (3)"),
    (["run", QUICK, "--set", "train.compile=3", "--dry-run"], "train.compile: expected a boolean, got 3"),
    (["run", QUICK, "--set", "train.lr=nan", "--dry-run"], "train.lr: must be a finite number, got nan"),
    (["run", QUICK, "--set", "train.steps=100000000000000000000", "--dry-run"], "does not fit a 64-bit integer"),
    (["run", QUICK, "--set", "train.seed=4294967296", "--dry-run"], "train.seed: must be below 2**32"),
    (["run", QUICK, "--set", "schedule.timesteps=1000001", "--dry-run"], "from 2 to 1,000,000, got 1000001"),
    (["run", QUICK, "--set", "backbone.num_res_blocks=65", "--dry-run"], "num_res_blocks must be at most 64"),
    (["run", QUICK, "--set", "backbone.channels=131072", "--dry-run"], "more than this machine's"),
    (["run", QUICK, "--set", "eval.samples=1000000000000", "--dry-run"], "eval.samples = 1,000,000,000,000 samples"),
])
def test_bad_input_is_one_paragraph_and_exit_1(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path if args[0] != "recipe" or args[2] != "nope.toml" else tmp_path)
    res = invoke(*args)
    assert res.exit_code == 1, res.raw
    assert message in res.output
    assert "Traceback" not in res.output


def test_nproc_per_node_inside_a_torchrun_job_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = invoke("run", QUICK, "--nproc-per-node", "2")
    assert res.exit_code == 1 and "inside a torchrun job" in res.output and "Traceback" not in res.output


@pytest.mark.filterwarnings("ignore:skipping a damaged checkpoint")
def test_sample_from_a_corrupt_checkpoint_fails_cleanly(trained, tmp_path):
    import shutil

    out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for ckpt in (copy / "checkpoints").iterdir():
        (ckpt / "ema.safetensors").write_bytes(b"garbage")
    res = invoke("sample", copy, "--n", 2, "--out", tmp_path / "s", "--no-progress")
    assert res.exit_code == 1 and "no usable checkpoint" in res.output
    res = invoke("sample", copy, "--checkpoint", copy / "checkpoints" / "step-2", "--n", 2, "--out", tmp_path / "s")
    assert res.exit_code == 1 and "checksum" in res.output


def test_plugins_command_through_the_runner():
    res = invoke("plugins")
    assert res.exit_code == 0 and "digits, mnist, fashion-mnist, cifar10, image-folder" in res.raw.replace("\n", "")
