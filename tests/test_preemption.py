"""Re-submitted jobs and shared folders: --resume before the first checkpoint starts from step 0,
a resume must mean what the run meant, a run folder resumes with its own recipe, and one folder
takes one writer at a time (a lock file; a dead owner's lock is taken over)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gendiff.errors import TrainingError
from gendiff.runner import run

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "quickstart.toml"
TINY = ["schedule.timesteps=20", "train.batch_size=8", "backbone.channels=32", "train.sample_every=0",
        "eval.samples=4", "eval.metrics=[]", "train.precision=\"fp32\"", "train.log_every=1", "train.warmup_steps=2",
        "train.checkpoint_every=2", "train.keep_checkpoints=0", "backbone.dropout=0.1"]


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_resume_before_the_first_checkpoint_starts_from_step_0_and_matches(tmp_path, capsys):
    run(QUICK, [*TINY, "train.steps=4"], out=tmp_path / "whole", progress=False)
    # a job killed before its first checkpoint left the recipe and a metrics line, nothing else
    run(QUICK, [*TINY, "train.steps=4", "train.checkpoint_every=3"], out=tmp_path / "cut", progress=False,
        stop_after=1)
    for ckpt in (tmp_path / "cut" / "checkpoints").glob("step-*"):
        raise AssertionError(f"expected no checkpoint, found {ckpt}")
    run(QUICK, [*TINY, "train.steps=4", "train.checkpoint_every=3"], out=tmp_path / "cut", progress=False,
        resume=True)
    assert "no checkpoint in" in capsys.readouterr().out
    a, b = weights(tmp_path / "whole" / "checkpoints" / "step-4"), weights(tmp_path / "cut" / "checkpoints" / "step-4")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    run(QUICK, [*TINY, "train.steps=2"], out=tmp_path / "never", progress=False, resume=True)  # missing: from 0
    assert (tmp_path / "never" / "checkpoints" / "step-2").is_dir()


@pytest.mark.parametrize("override, named", [
    ("schedule.timesteps=30", "schedule.timesteps: 20 -> 30"),
    ('parameterization.name="x0"', "parameterization.name: 'eps' -> 'x0'"),
    ("train.batch_size=16", "train.batch_size: 8 -> 16"),
    ("backbone.channels=64", "backbone.channels: 32 -> 64"),
])
def test_a_resume_that_changes_the_meaning_is_refused_by_key(tmp_path, override, named):
    run(QUICK, [*TINY, "train.steps=2"], out=tmp_path / "r", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")}
    with pytest.raises(TrainingError, match=named.replace("(", r"\(")) as err:
        run(QUICK, [*TINY, "train.steps=4", override], out=tmp_path / "r", progress=False, resume=True)
    assert "nothing was changed" in str(err.value)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")} == before


def test_a_run_folder_resumes_with_its_own_recipe(tmp_path):
    """Overrides given at the start need not be repeated: RECIPE may be the run folder itself;
    train.steps, lr and the other resumable keys may still change."""
    run(QUICK, [*TINY, "train.steps=2"], out=tmp_path / "r", progress=False)
    result = run(tmp_path / "r", ["train.steps=4", "train.lr=1e-3", 'train.device="cpu"'], progress=False, resume=True)
    assert result["trained_steps"] == 4 and result["run_dir"] == str(tmp_path / "r")
    assert (tmp_path / "r" / "checkpoints" / "step-4").is_dir()


def test_one_writer_per_folder(tmp_path):
    """A live owner's lock refuses a second run; a dead owner's lock (same host) is taken over."""
    out = tmp_path / "r"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                "started": "2026-11-23 10:00:00"}))
        with pytest.raises(TrainingError, match=rf"being written by another gendiff process \(PID {sleeper.pid}"):
            run(QUICK, [*TINY, "train.steps=2"], out=out, progress=False)
        assert not (out / "checkpoints").exists() and not (out / "recipe.toml").exists()  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()
    result = run(QUICK, [*TINY, "train.steps=2"], out=out, progress=False)  # its owner died: taken over
    assert result["trained_steps"] == 2 and not (out / ".lock").exists()
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "another-machine", "started": "?"}))
    with pytest.raises(TrainingError, match=r"on another-machine.*delete .*\.lock"):
        run(QUICK, [*TINY, "train.steps=4"], out=out, progress=False, resume=True)


def test_two_processes_on_one_folder_never_interleave(tmp_path):
    """Two real gendiff run processes on one --out: exactly one trains, the other is refused."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(QUICK.read_text())
    args = [sys.executable, "-m", "gendiff", "run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
            *[a for item in [*TINY, "train.steps=300", "train.checkpoint_every=100"] for a in ("--set", item)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(args, env=env, capture_output=True, text=True)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 1 and "being written by another gendiff process" in second.stderr
    assert "Traceback" not in second.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 301))


def _gendiff_run(out, *extra):
    recipe_sets = [*TINY, "train.steps=60", "train.checkpoint_every=1000"]
    args = [sys.executable, "-m", "gendiff", "run", str(QUICK), "--out", str(out), "--no-progress",
            *[a for item in recipe_sets for a in ("--set", item)], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    whole = _gendiff_run(out)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    return out


@pytest.mark.parametrize("sig", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow)])  # the same path
def test_a_signal_saves_the_step_it_finished_and_stops_with_one_line(tmp_path, sig, uninterrupted):
    """A real SIGTERM (a scheduler's notice) or SIGINT (Ctrl-C) mid-training: the step under way
    finishes and is saved, the process exits 1 with one line, and --resume ends bit for bit where
    an uninterrupted run ends."""
    import signal
    import time

    from gendiff.checkpoint import list_checkpoints, load_checkpoint

    out = tmp_path / "stopped"
    proc = _gendiff_run(out)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if (out / "metrics.jsonl").read_text().count("\n") >= 3:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(getattr(signal, sig))
    assert proc.wait(timeout=60) == 1
    message = proc.stderr.read()
    assert "Traceback" not in message and message.count("\n") <= 4, message  # one paragraph
    flat = " ".join(message.split())
    assert f"stopped by {sig} after step" in flat and "continue with --resume" in flat
    step = int(flat.split("after step ")[1].split(":")[0])
    assert 3 <= step < 60 and [s for s, _ in list_checkpoints(out)] == [step]
    load_checkpoint(out / "checkpoints" / f"step-{step}")  # verifies
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] and not (out / ".lock").exists()
    resumed = _gendiff_run(out, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a, b = weights(uninterrupted / "checkpoints" / "step-60"), weights(out / "checkpoints" / "step-60")
    assert all(torch.equal(a[k], b[k]) for k in a)
