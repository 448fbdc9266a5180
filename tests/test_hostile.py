"""Hostile input beyond recipes: exploding weights, broken or misbehaving plugin components,
impossible sample counts, outputs that cannot be written (read-only, a real file-size limit),
damaged sample and metrics files, hostile image folders, renamed checkpoints, and the edges of
the settings (T = 2, batch size 1, ...). Each ends in what the math says or in one clear message
(exit 1 from the CLI) with nothing already written lost."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import gendiff
from gendiff.checkpoint import list_checkpoints, load_latest
from gendiff.cli import app
from gendiff.errors import GendiffError, TrainingError

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "quickstart.toml"
TINY = ["schedule.timesteps=20", "train.batch_size=8", "backbone.channels=32", "train.sample_every=0",
        "eval.samples=4", "eval.metrics=[]", "train.precision=\"fp32\"", "train.log_every=1"]


def invoke(*args):
    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return res.exit_code, " ".join(res.output.split())


def test_exploding_weights_are_never_checkpointed(tmp_path):
    from gendiff.runner import run

    with pytest.raises(TrainingError, match="non-finite") as err:
        run(QUICK, [*TINY, "train.steps=5", "train.lr=1e38", "train.warmup_steps=0", "train.grad_clip=0",
                    "train.checkpoint_every=1"], out=tmp_path / "r", progress=False)
    for _, ckpt in list_checkpoints(tmp_path / "r"):  # whatever was written holds finite weights only
        from safetensors.torch import load_file

        for name in ("model.safetensors", "ema.safetensors"):
            assert all(bool(torch.isfinite(v).all()) for v in load_file(str(ckpt / name)).values())
    assert "Lower train.lr" in str(err.value)


@pytest.mark.parametrize("result, message", [
    ("shape", "returned (2, 1, 4, 4) for a batch that must be (2, 1, 8, 8)"),
    ("batch", "returned (1, 1, 8, 8) for a batch that must be (2, 1, 8, 8)"),
    ("nan", "returned NaN or inf in 2 of 2 samples"),
])
def test_a_sampler_returning_wrong_samples_is_refused(quick_run, tmp_path, result, message):
    from gendiff.runs import generate, load_run, write_samples
    from gendiff.samplers import Sampler

    class Faulty(Sampler):
        name = "faulty"

        def sample(self, model, shape, generator=None, progress=None):
            n = shape[0]
            if result == "shape":
                return torch.zeros(n, 1, 4, 4)
            if result == "batch":
                return torch.zeros(1, *shape[1:])
            return torch.full(shape, float("nan"))

    model, _ = load_run(quick_run)
    with pytest.raises(GendiffError, match=message.replace("(", r"\(").replace(")", r"\)")):
        x = generate(model, 2, sampler=Faulty(), progress=False)
        write_samples(x, model.levels, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_impossible_counts_and_unwritable_outputs_are_refused_before_sampling(quick_run, tmp_path):
    code, out = invoke("sample", quick_run, "--n", 10**15, "--out", tmp_path / "a", "--no-progress")
    assert code == 1 and "1,000,000,000,000,000 samples" in out and "more than this machine's" in out
    assert not (tmp_path / "a").exists()
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    code, out = invoke("sample", quick_run, "--n", 2, "--out", blocker, "--no-progress")
    assert code == 1 and "is a file, not a folder" in out and blocker.read_text() == "keep me"
    code, out = invoke("sample", quick_run, "--n", 2, "--out", blocker / "inside", "--no-progress")
    assert code == 1 and "cannot write to --out" in out
    code, out = invoke("interpolate", quick_run, "--t", 5, "--out", blocker, "--no-progress")
    assert code == 1 and "is a file, not a folder" in out and "Traceback" not in out


def test_a_full_disk_while_writing_samples_keeps_the_old_ones(quick_run, tmp_path):
    """A real write failure (RLIMIT_FSIZE, as a full disk): a clear error, the earlier samples.npz
    byte for byte, no temporary file left."""
    out = tmp_path / "s"
    code, _ = invoke("sample", quick_run, "--n", 4, "--out", out, "--no-progress", "--seed", 1)
    assert code == 0
    before = (out / "samples.npz").read_bytes()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000, 1_000))

    result = subprocess.run([sys.executable, "-m", "gendiff", "sample", str(quick_run), "--n", "400", "--out", str(out),
                             "--no-progress", "--seed", "2"], capture_output=True, text=True, preexec_fn=limit,
                            timeout=300)
    message = " ".join(result.stderr.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "could not write" in message and "intact" in message
    assert (out / "samples.npz").read_bytes() == before
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_damaged_sample_files_are_clean_errors_and_a_damaged_cache_is_redrawn(quick_run, tmp_path):
    (tmp_path / "not.npz").write_text("not a zip file")
    code, out = invoke("eval", "fid", tmp_path / "not.npz", "--ref", "digits:train")
    assert code == 1 and "is not a samples.npz" in out
    good = tmp_path / "good.npz"
    np.savez_compressed(good, samples=np.zeros((4, 8, 8, 1), np.uint8))
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:40])
    code, out = invoke("eval", "fid", tmp_path / "cut.npz", "--ref", "digits:train")
    assert code == 1 and "is not a samples.npz" in out
    from gendiff.evaluation.inputs import run_samples

    images, model, ckpt = run_samples(quick_run, 6, seed=5, progress=False)
    cache = quick_run / "eval" / "samples" / "seed-5.npz"
    cache.write_bytes(cache.read_bytes()[:100])  # damaged
    with pytest.warns(UserWarning, match="sample cache .* is damaged"):
        again, _, _ = run_samples(quick_run, 6, seed=5, progress=False)
    assert np.array_equal(images, again)  # drawn again, the same seeded samples


def test_sixteen_bit_grey_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from gendiff.datasets import ImageFolder
    from gendiff.evaluation.inputs import load_images

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, value in enumerate((0, 32768, 65535)):
        Image.fromarray(np.full((8, 8), value, np.uint16)).save(folder / f"{i}.png")
    loaded = load_images(folder)
    assert [int(loaded[i].mean()) for i in range(3)] == [0, 128, 255]
    data = ImageFolder(str(folder), image_size=8, channels=1).load("train")
    assert sorted(int(x.float().mean()) for x in data) == [0, 128, 255]


def test_broken_plugin_components_are_named(tmp_path):
    from gendiff.backbones import Backbone
    from gendiff.parameterizations import EpsParameterization

    class Exploding(EpsParameterization):
        name = "exploding"

        def __init__(self):
            raise RuntimeError("cannot allocate the lookup table")

    from gendiff.component import construct

    with pytest.raises(GendiffError, match=r"parameterization 'exploding' \(from .*test_hostile\) could not be created: "
                                           r"RuntimeError: cannot allocate"):
        construct(Exploding, "parameterization", {})

    class FailingNet(torch.nn.Module):
        def forward(self, x, t):
            raise RuntimeError("CUDA kernel missing")

    recipe = {"schedule": {"name": "linear", "timesteps": 10}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"}, "sampler": {"name": "ancestral"},
              "data": {"shape": [1, 4, 4], "levels": 256}}
    with pytest.raises(GendiffError, match=r"failed on a blank input .*RuntimeError: CUDA kernel missing"):
        gendiff.build(recipe, model=FailingNet())
    assert Backbone  # the family a plugin's network subclasses


def test_a_renamed_checkpoint_folder_is_not_trusted(tmp_path):
    from gendiff.runner import run

    run(QUICK, [*TINY, "train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=0"], out=tmp_path / "r",
        progress=False)
    ckpts = tmp_path / "r" / "checkpoints"
    shutil.copytree(ckpts / "step-2", ckpts / "step-10")  # another step's folder under a newer name
    with pytest.warns(UserWarning, match="holds step 2, not the step its name says"):
        latest = load_latest(tmp_path / "r")
    assert latest.step == 4


def png_bomb(path: Path, side: int) -> None:
    """A valid grey PNG of side x side black pixels, written row block by row block (its file is
    a few hundred kB; decoding it would take side**2 bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, body, rows = zlib.compressobj(9), [], b"\0" * ((side + 1) * 500)
    for _ in range(side // 500):
        body.append(packer.compress(rows))
    body.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b""))


def hostile_folder(folder: Path) -> dict[str, list[str]]:
    """Every kind of file an image folder may hold; returns what must be skipped, by kind."""
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "good.png")
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "sub" / "good.jpg")
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(folder / "sixteen.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (0, 0, 255, 255)   # left half opaque blue, right half fully transparent red
    rgba[:, 4:] = (255, 0, 0, 0)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.stack([np.zeros((8, 8)), np.full((8, 8), 128)], -1).astype(np.uint8), "LA").save(folder / "la.png")
    palette = Image.fromarray(np.tile(np.arange(4, dtype=np.uint8), (8, 2)), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
    palette.save(folder / "palette.png")
    palette.save(folder / "palette-transparent.png", transparency=3)  # entry 3 transparent
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("not a picture at all")
    (folder / "notes.txt").write_text("no image suffix: not even looked at")
    whole = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    jpeg = (folder / "sub" / "good.jpg").read_bytes()
    (folder / "sub" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png_bomb(folder / "bomb.png", 10_000)   # 100 megapixels: above the limit, PIL only warns
    png_bomb(folder / "bigger.png", 14_000)  # 196 megapixels: PIL itself refuses it
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    (folder / "gone.png").symlink_to(folder / "absent.png")
    (folder / "sub" / "up").symlink_to(folder)  # a folder loop: read once, nothing counted twice
    return {"unreadable": ["text.png", "zero.png"], "truncated": ["sub/truncated.jpg", "truncated.png"],
            "too large": ["bigger.png", "bomb.png"], "links leading nowhere or in a loop": ["gone.png", "loop-a.png", "loop-b.png"]}


def test_a_hostile_image_folder_is_read_as_the_pictures_say_and_the_rest_counted(tmp_path):
    import warnings

    from gendiff.datasets import ImageFolder

    skipped = hostile_folder(tmp_path / "imgs")
    data = ImageFolder(str(tmp_path / "imgs"), image_size=8, channels=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = data.split_files("train")
    assert len(caught) == 1  # one counted warning for everything skipped
    message = str(caught[0].message)
    assert message.startswith(f"skipped 9 file(s) in {tmp_path / 'imgs'}: ")
    for kind, names in skipped.items():
        assert f"{len(names)} {kind} ({', '.join(names)})" in message
    names = [str(f.relative_to(tmp_path / "imgs")) for f in files]
    assert names == ["good.png", "la.png", "palette-transparent.png", "palette.png", "rgba.png", "sixteen.png",
                     "sub/good.jpg"]  # the folder loop sub/up is not walked twice
    pictures = dict(zip(names, data.load("train").permute(0, 2, 3, 1).numpy()))
    assert (pictures["rgba.png"][:, :4] == (0, 0, 255)).all()          # opaque: as it is
    assert (pictures["rgba.png"][:, 5:] == 255).all()                  # transparent: white, not red
    assert (abs(pictures["la.png"].astype(int) - 127) <= 1).all()       # black at half opacity on white
    assert (pictures["palette.png"][:, 0] == (255, 0, 0)).all() and (pictures["palette.png"][:, 2] == (0, 0, 255)).all()
    assert (pictures["palette-transparent.png"][:, 3] == 255).all()   # the transparent entry: white
    assert (pictures["sixteen.png"] == 128).all()                     # 16-bit 50% grey stays 50% grey


@pytest.mark.parametrize("count", [0, 1])
def test_an_image_folder_with_fewer_than_two_pictures_is_refused(tmp_path, count):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"")
    for i in range(count):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"{i}.png")
    recipe = tmp_path / "r.toml"
    recipe.write_text(QUICK.read_text().replace('name = "digits"', f'name = "image-folder"\npath = "{folder}"\nimage_size = 8\nchannels = 1'))
    code, out = invoke("run", recipe, "--out", tmp_path / "run", *[a for s in TINY for a in ("--set", s)], "--set", "train.steps=1")
    assert code == 1 and "Traceback" not in out
    assert f"the image folder {folder} holds {count} usable PNG or JPEG picture(s) (1 skipped, see the warning)" in out
    assert "skipped 1 file(s)" in out and "1 unreadable (broken.png)" in out
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_hostile_image_folder_trains_from_the_command_line(tmp_path):
    hostile_folder(tmp_path / "imgs")
    recipe = tmp_path / "r.toml"
    recipe.write_text(QUICK.read_text().replace('name = "digits"', f'name = "image-folder"\npath = "{tmp_path / "imgs"}"\nimage_size = 8\nchannels = 3'))
    code, out = invoke("run", recipe, "--out", tmp_path / "run", *[a for s in TINY for a in ("--set", s)],
                       "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "eval.samples=2")
    assert code == 0, out
    assert "Traceback" not in out and out.count("skipped 9 file(s)") >= 1
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir()


class Flaky:
    """A plugin (as a package would ship it) with one backbone, ``flaky``, that misbehaves as
    ``[backbone] fault`` says after its ``after``-th call (the build's probe is call 1; the
    variable FLAKY_AFTER overrides ``after``)."""

    from gendiff.hookspecs import hookimpl

    @staticmethod
    @hookimpl
    def gendiff_register_backbones():
        from gendiff.backbones import Backbone

        class FlakyNet(Backbone):
            name = "flaky"

            def __init__(self, in_channels, out_channels, image_size, fault="raise", after=1):
                super().__init__()
                self.conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
                self.fault, self.after, self.calls = fault, after, 0

            def forward(self, x, t):
                self.calls += 1
                out = self.conv(x)
                if self.calls <= int(os.environ.get("FLAKY_AFTER", self.after)):
                    return out
                if self.fault == "raise":
                    raise RuntimeError("the custom kernel hit an illegal address")
                if self.fault == "shape":
                    return out[..., :-1]
                if self.fault == "int":
                    return out.long()
                if self.fault == "float64":
                    return out.double()
                return out * float("nan")

        return [FlakyNet]


def use_flaky(monkeypatch) -> None:
    import gendiff.plugins as plugins

    monkeypatch.setattr(plugins, "_default", plugins.create_plugin_system([("flaky-plugin", Flaky)], autoload=False))


def flaky_recipe(tmp_path, fault, after) -> Path:
    recipe = tmp_path / "flaky.toml"
    text = QUICK.read_text()
    start, end = text.index("[backbone]"), text.index("[sampler]")
    recipe.write_text(text[:start] + f'[backbone]\nname = "flaky"\nfault = "{fault}"\nafter = {after}\n\n' + text[end:])
    return recipe


@pytest.mark.parametrize("fault, message", [
    ("raise", r"backbone 'flaky' \(from test_hostile\) failed on an input of shape \(8, 1, 8, 8\) "
              r"\(RuntimeError: the custom kernel hit an illegal address\)"),
    ("shape", r"backbone 'flaky' \(from test_hostile\) returned \(8, 1, 8, 7\) torch.float32 for an input of shape "
              r"\(8, 1, 8, 8\); it must return a floating-point tensor of shape \(8, 1, 8, 8\)"),
    ("int", r"backbone 'flaky' \(from test_hostile\) returned \(8, 1, 8, 8\) torch.int64"),
])
def test_a_plugin_backbone_failing_in_training_is_named_and_loses_nothing(tmp_path, monkeypatch, fault, message):
    use_flaky(monkeypatch)
    recipe = flaky_recipe(tmp_path, fault, after=3)  # the probe, steps 1 and 2 work; step 3 fails
    code, out = invoke("run", recipe, "--out", tmp_path / "r", *[a for s in TINY if not s.startswith("backbone")
                                                                   for a in ("--set", s)],
                       "--set", "train.steps=5", "--set", "train.checkpoint_every=2")
    assert code == 1 and "Traceback" not in out, out
    import re

    assert re.search(message, out), out
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [2]  # step 2's checkpoint, intact and verified
    assert not (tmp_path / "r" / ".lock").exists()
    code, out = invoke("run", tmp_path / "r", "--resume", "--set", "backbone.after=1000")
    assert code == 1 and "backbone.after" in out  # a resume with another network setting is refused by key


@pytest.mark.parametrize("fault, message", [
    ("raise", r"backbone 'flaky' \(from test_hostile\) failed on an input of shape \(3, 1, 8, 8\) \(RuntimeError"),
    ("nan", r"returned NaN or inf in 3 of 3 samples"),
])
def test_a_plugin_backbone_failing_while_sampling_is_named_and_keeps_the_old_samples(tmp_path, monkeypatch, fault,
                                                                                     message):
    use_flaky(monkeypatch)
    recipe = flaky_recipe(tmp_path, fault, after=10**6)
    code, out = invoke("run", recipe, "--out", tmp_path / "r", *[a for s in TINY if not s.startswith("backbone")
                                                                   for a in ("--set", s)], "--set", "train.steps=1")
    assert code == 0, out
    code, out = invoke("sample", tmp_path / "r", "--n", 3, "--out", tmp_path / "s")
    assert code == 0, out
    before = (tmp_path / "s" / "samples.npz").read_bytes()
    monkeypatch.setenv("FLAKY_AFTER", "1")  # from now on every call after the probe misbehaves
    code, out = invoke("sample", tmp_path / "r", "--n", 3, "--out", tmp_path / "s")
    import re

    assert code == 1 and "Traceback" not in out and re.search(message, out), out
    assert (tmp_path / "s" / "samples.npz").read_bytes() == before


def test_a_plugin_backbone_returning_another_precision_is_refused_at_build(tmp_path, monkeypatch):
    use_flaky(monkeypatch)
    code, out = invoke("run", flaky_recipe(tmp_path, "float64", after=0), "--dry-run")
    assert code == 1 and "Traceback" not in out
    assert "returns torch.float64 for an input of torch.float32" in out


def limited(args: list, limit: int) -> tuple[int, str]:
    """``gendiff ARGS`` in a subprocess whose every file may hold at most ``limit`` bytes
    (RLIMIT_FSIZE: a write past it fails with EFBIG, as a full disk fails with ENOSPC)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "gendiff", *map(str, args), "--no-progress"], capture_output=True,
                            text=True, preexec_fn=apply, timeout=300, env={**os.environ, "COLUMNS": "500"})
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_at_the_end_of_a_run_keeps_the_earlier_final_samples(tmp_path):
    """The final samples of `gendiff run` (PNGs and samples.npz) are replaced as a set: a write
    failure leaves the earlier set whole, not 400 new PNGs among 4 old ones."""
    code, out = invoke("run", QUICK, "--out", tmp_path / "r", *[a for s in TINY for a in ("--set", s)],
                       "--set", "train.steps=2")
    assert code == 0, out
    final = tmp_path / "r" / "samples" / "final"
    before = snapshot(final)
    assert len(before) == 5  # 4 PNGs and samples.npz
    code, out = limited(["run", tmp_path / "r", "--resume", "--set", "eval.samples=400"], 3_000)
    assert code == 1 and f"could not write the files of {final}: File too large" in out and "intact" in out
    assert snapshot(final) == before  # no temporary folder either


def test_a_full_disk_during_evaluation_keeps_the_earlier_results(quick_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    for command in (["eval", "nll", run, "--n", 8], ["eval", "rd", run, "--n", 8]):
        code, out = invoke(*command, "--no-progress")
        assert code == 0, out
    before = snapshot(run / "eval")
    assert {"nll-test.json", "rd-test/rd.csv", "rd-test/rd.png"} <= set(before)
    for command, written in ((["eval", "nll", run, "--n", 16], "nll-test.json"), (["eval", "rd", run, "--n", 16], "rd-test/rd.")):
        code, out = limited(command, 200)
        assert code == 1 and f"could not write {run / 'eval' / written}" in out and "File too large" in out, out
        assert snapshot(run / "eval") == before  # the earlier results byte for byte, no temporary file


def test_a_smaller_sample_set_replaces_a_larger_one_whole(quick_run, tmp_path):
    out = tmp_path / "s"
    assert invoke("sample", quick_run, "--n", 12, "--out", out, "--no-progress")[0] == 0
    (out / "mine.txt").write_text("a file of the user's")
    assert invoke("sample", quick_run, "--n", 3, "--out", out, "--no-progress", "--seed", 4)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png", "mine.txt", "samples.npz"]
    from gendiff.evaluation.inputs import load_images

    assert np.array_equal(load_images(out), np.load(out / "samples.npz")["samples"])  # PNGs and npz: one set


def test_a_failed_command_leaves_no_empty_output_folder(quick_run, tmp_path, monkeypatch):
    use_flaky(monkeypatch)
    recipe = flaky_recipe(tmp_path, "raise", after=10**6)
    code, out = invoke("run", recipe, "--out", tmp_path / "r", *[a for s in TINY if not s.startswith("backbone")
                                                                   for a in ("--set", s)], "--set", "train.steps=1")
    assert code == 0, out
    monkeypatch.setenv("FLAKY_AFTER", "1")
    code, out = invoke("sample", tmp_path / "r", "--n", 3, "--out", tmp_path / "new" / "s")
    assert code == 1 and "backbone 'flaky'" in out
    assert not (tmp_path / "new" / "s").exists() and not (tmp_path / "new" / "s-figures").exists()
    code, out = invoke("interpolate", quick_run, "--t", 5, "--pairs", 10**4, "--out", tmp_path / "i", "--no-progress")
    assert code == 1 and "needs 20000 images" in out and not (tmp_path / "i").exists()


def test_damaged_metrics_lines_are_dropped_and_a_folder_in_their_place_refused(tmp_path):
    args = ["--out", tmp_path / "r", *[a for s in TINY for a in ("--set", s)]]
    assert invoke("run", QUICK, *args, "--set", "train.steps=2", "--set", "train.checkpoint_every=1")[0] == 0
    metrics = tmp_path / "r" / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(lines[0] + b'{"step": 1, "loss": "\xff\xfe not UTF-8"}\n' + lines[1])
    code, out = invoke("plot", tmp_path / "r")
    assert code == 0, out
    code, out = invoke("run", tmp_path / "r", "--resume", "--set", "train.steps=3")
    assert code == 0 and "1 damaged line(s) (not UTF-8 JSON objects) dropped" in out, out
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    metrics.unlink()
    metrics.mkdir()
    before = snapshot(tmp_path / "r")
    code, out = invoke("run", tmp_path / "r", "--resume", "--set", "train.steps=4")
    assert code == 1 and f"{metrics}isnotafile(afolder?)" in out.replace(" ", "") and "nothing was changed" in out
    assert snapshot(tmp_path / "r") == before and not (tmp_path / "r" / ".lock").exists()


@pytest.mark.parametrize("setting, message", [
    ("schedule.timesteps=1", "timesteps must be an integer from 2 to 1,000,000, got 1"),
    ("backbone.channel_mult=[1,2,2,2,2]", "image_size 8 cannot be halved 4 times (channel_mult has 5 resolutions)"),
    ("backbone.channel_mult=[]", "channel_mult must be a non-empty list of positive integers, got []"),
    ("backbone.attn_resolutions=[3]", "attn_resolutions [3] do not occur; this U-Net's resolutions are [8, 4]"),
    ("train.lr=0", "train.lr: must be > 0, got 0.0"),
    ("train.ema_decay=1.0", "train.ema_decay: must be < 1, got 1.0"),
    ("backbone.dropout=1.0", "dropout must be a number in [0, 1), got 1.0"),
])
def test_edges_without_meaning_are_refused_before_any_work(tmp_path, setting, message):
    code, out = invoke("run", QUICK, "--out", tmp_path / "r", *[a for s in TINY for a in ("--set", s)],
                       "--set", setting)
    assert code == 1 and "Traceback" not in out and message in out, out
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_two_steps_are_a_diffusion_as_the_math_says(tmp_path):
    """T = 2: the ancestral sampler makes exactly 2 network evaluations, and L_1 (the KL at t = 2)
    of a network that predicts eps = 0 equals its closed form from eqs. 6, 7 and 1."""
    class Zero(torch.nn.Module):
        calls = 0

        def forward(self, x, t):
            Zero.calls += 1
            return torch.zeros_like(x)

    recipe = {"schedule": {"name": "linear", "timesteps": 2}, "parameterization": {"name": "eps"},
              "variance": {"name": "fixed-large"}, "weighting": {"name": "simple"}, "sampler": {"name": "ancestral"},
              "data": {"shape": [1, 4, 4], "levels": 256}}
    model = gendiff.build(recipe, model=Zero()).double()
    Zero.calls = 0
    x = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert Zero.calls == 2 and x.shape == (3, 1, 4, 4) and bool(torch.isfinite(x).all())
    x0 = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    terms = list(model.bound_terms(x0, generator=torch.Generator().manual_seed(2)))
    assert [term.t for term in terms] == [1, 2]
    b1, b2 = 1e-4, 0.02
    a1, a2 = 1 - b1, 1 - b2
    abar1, abar2 = a1, a1 * a2
    x2 = terms[1].x_t
    mean_q = (abar1 ** 0.5 * b2 / (1 - abar2)) * x0 + (a2 ** 0.5 * (1 - abar1) / (1 - abar2)) * x2  # eq. 7
    var_q = (1 - abar1) / (1 - abar2) * b2
    mean_p, var_p = x2 / a2 ** 0.5, b2  # eq. 11 with eps = 0, sigma_t^2 = beta_t
    kl = 0.5 * (math.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)
    assert torch.allclose(terms[1].nats, kl.sum(dim=(1, 2, 3)), rtol=1e-10)


def test_batch_size_one_trains_on_one_example_a_step(tmp_path):
    from gendiff.runner import run
    from gendiff.training.data import DataStream

    stream = DataStream(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), 1, seed=0, flip=False, levels=17)
    assert stream.steps_per_epoch == 10 and sorted(int(stream.indices(s)) for s in range(10)) == list(range(10))
    run(QUICK, [*TINY, "train.batch_size=1", "train.steps=3", "eval.samples=1"], out=tmp_path / "r", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
