"""Nothing is lost: SIGKILL at random points and resume, damaged and hostile checkpoints, a
write failure at checkpoint time. (The recipe fuzz is in test_recipe_fuzz.py.)"""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import tomli_w
from safetensors.torch import load_file

from fakes import digits_recipe
from gendiff.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_latest, _sha256
from gendiff.training import Trainer, load_run, prepare

ROOT = Path(__file__).resolve().parents[1]


def recipe(**train):
    cfg = {"steps": 30, "batch_size": 32, "warmup_steps": 5, "checkpoint_every": 1, "seed": 11,
           "keep_checkpoints": 3, **train}
    return digits_recipe(timesteps=100, channels=16, dropout=0.1, **cfg)


def write_recipe(path, **train):
    path.write_text(tomli_w.dumps(recipe(**train)))
    return path


def same_weights(a_dir, b_dir):
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(a_dir / name), load_file(b_dir / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name  # bit for bit


def start(recipe_path, out, resume):
    args = [sys.executable, "-m", "gendiff", "run", str(recipe_path), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args + (["--resume"] if resume else []), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
    return True


def metrics_lines(out):
    try:  # a fresh start removes the file of the run it replaces: it may vanish between two looks
        return (out / "metrics.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


def writing(out):
    root = out / "checkpoints"
    return root.is_dir() and any(p.name.startswith(".step-") and ".tmp-" in p.name for p in os.scandir(root))


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """A re-submitted job: the same command line (always --resume) after every kill, the first
    kills landing at random moments from process start, before any checkpoint exists."""
    path = write_recipe(tmp_path / "r.toml")
    whole = start(path, tmp_path / "whole", resume=True)  # --resume on a missing folder: from step 0
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    rng = random.Random(2026)
    out = tmp_path / "killed"
    kills, during_write, early = 0, 0, 0
    while kills < 8:
        proc = start(path, out, resume=True)
        before = metrics_lines(out)
        if kills < 2:  # at a random moment from process start, before the first checkpoint
            time.sleep(rng.uniform(0.5, 4.0))
            hit = proc.poll() is None
            early += not list_checkpoints(out)
        elif kills % 2 == 0:  # kill while a checkpoint is being written (its temporary folder exists)
            hit = wait_for(lambda: writing(out) and metrics_lines(out) > before, proc)
        else:  # kill at a random moment a few steps into training
            target = before + rng.randint(1, 4)
            hit = wait_for(lambda: metrics_lines(out) >= target, proc)
            time.sleep(rng.uniform(0, 0.05))
        if not hit:
            pytest.fail(f"the run ended before it could be killed: {proc.communicate()[1][-2000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if kills > 2 and kills % 2 == 1 and writing(out):
            during_write += 1
        for _, ckpt in list_checkpoints(out):
            load_checkpoint(ckpt)  # every finished checkpoint verifies, whatever moment the kill hit
    assert early >= 1 and during_write >= 1  # a kill before any checkpoint, and one mid-write
    proc = start(path, out, resume=True)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    same_weights(tmp_path / "whole" / "checkpoints" / "step-30", out / "checkpoints" / "step-30")
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, 31))
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # debris removed
    assert not (out / ".lock").exists()  # given back by the run that finished


@pytest.fixture(scope="module")
def run6(tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "run"
    Trainer(prepare(recipe(steps=6, checkpoint_every=3, keep_checkpoints=0)), out, progress=False).train()
    return out


def copy_run(run6, tmp_path):
    import shutil

    shutil.copytree(run6, tmp_path / "run")
    return tmp_path / "run"


def rewrite_manifest(ckpt):
    """What an attacker who can write the folder would do: make the checksums match again."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["sha256"] = {name: _sha256(ckpt / name) for name in manifest["sha256"]}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


class Payload:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:skipping a damaged checkpoint")
def test_a_checkpoint_carrying_a_pickle_payload_does_not_execute_it(run6, tmp_path):
    run = copy_run(run6, tmp_path)
    ckpt = run / "checkpoints" / "step-6"
    marker = tmp_path / "pwned"
    state = torch.load(ckpt / "state.pt", weights_only=True)
    state["extra"] = Payload(marker)
    torch.save(state, ckpt / "state.pt")
    rewrite_manifest(ckpt)  # the checksums pass: only the safe loader stands in the way
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(ckpt)
    with pytest.warns(UserWarning, match="step-6.*cannot be read"):
        assert load_latest(run).step == 3  # reported, and the previous good checkpoint is used
    model, used = load_run(run)
    assert used.name == "step-3"
    assert not marker.exists()  # the payload never ran
    # the same object through an unsafe load would have run it: the test can fail
    torch.load(ckpt / "state.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("damage", ["truncate-weights", "truncate-state", "flip-a-byte", "delete-a-file",
                                    "garbage-manifest"])
def test_damaged_checkpoints_are_reported_and_the_previous_one_resumes(run6, tmp_path, damage):
    run = copy_run(run6, tmp_path)
    ckpt = run / "checkpoints" / "step-6"
    if damage == "truncate-weights":
        f = ckpt / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "truncate-state":
        f = ckpt / "state.pt"
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "flip-a-byte":
        f = ckpt / "ema.safetensors"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
    elif damage == "delete-a-file":
        (ckpt / "state.pt").unlink()
    else:
        (ckpt / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)
    trainer = Trainer(prepare(recipe(steps=6, checkpoint_every=3, keep_checkpoints=0)), run, progress=False)
    with pytest.warns(UserWarning, match="skipping a damaged checkpoint.*step-6"):
        trainer.train(resume=True)
    assert trainer.step == 6  # redone from step 3
    same_weights(run6 / "checkpoints" / "step-6", ckpt)  # and rewritten, identical to the original


def read_only(folder):
    """Make a folder read-only for this process; return the undo. As root, permission bits do not
    bind, so the immutable attribute is used (chattr +i); skip where neither works."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i is not available here: {done.stderr.decode().strip()}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_run_folder_at_checkpoint_time_is_a_clear_error_and_keeps_the_previous(tmp_path):
    trainer = Trainer(prepare(recipe(steps=6, checkpoint_every=3, keep_checkpoints=0)), tmp_path / "r",
                      progress=False)
    trainer.train(stop_after=3)
    root = tmp_path / "r" / "checkpoints"
    before = {p.name: p.read_bytes() for p in (root / "step-3").iterdir()}
    undo = read_only(root)
    try:
        with pytest.raises(CheckpointError, match="could not write the checkpoint for step 6.*untouched"):
            trainer.train(resume=True)
    finally:
        undo()
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [3]
    assert {p.name: p.read_bytes() for p in (root / "step-3").iterdir()} == before
    load_checkpoint(root / "step-3")


def test_a_full_disk_at_checkpoint_time_is_a_clear_error_and_keeps_the_previous(tmp_path):
    """A real write failure from the operating system: the file-size limit (RLIMIT_FSIZE) makes
    every write past it fail with EFBIG, as a full disk fails with ENOSPC. Step 3's checkpoint is
    written under no limit; the resumed process may write only a few kilobytes."""
    path = write_recipe(tmp_path / "r.toml", steps=6, checkpoint_every=3, keep_checkpoints=0)
    out = tmp_path / "r"
    Trainer(prepare(path), out, progress=False).train(stop_after=3)
    before = {p.name: p.read_bytes() for p in (out / "checkpoints" / "step-3").iterdir()}

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run([sys.executable, "-m", "gendiff", "run", str(path), "--out", str(out), "--resume",
                             "--no-progress"], cwd=ROOT, capture_output=True, text=True, preexec_fn=limit,
                            timeout=300)
    message = " ".join(result.stderr.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "could not write the checkpoint for step 6" in message and "untouched" in message
    assert "File too large" in message and "inline_container" not in message  # the system's words, not torch's
    assert [s for s, _ in list_checkpoints(out)] == [3]
    assert {p.name: p.read_bytes() for p in (out / "checkpoints" / "step-3").iterdir()} == before
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
