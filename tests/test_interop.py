"""diffusers interoperation: a UNet2DModel and a DDPMScheduler made here with random weights and
saved with save_pretrained, imported into gendiff, compared output for output and step for step
with diffusers itself, exported back and loaded by DDPMPipeline; bad folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

diffusers = pytest.importorskip("diffusers")

from gendiff.cli import app  # noqa: E402
from gendiff.interop import InteropError, export_diffusers, import_diffusers  # noqa: E402
from gendiff.runs import load_run  # noqa: E402

SMALL = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
             down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None, norm_num_groups=32,
             norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, dropout=0.0)
#: the released google/ddpm-cifar10-32 configuration
CIFAR10 = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
               layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None,
               norm_num_groups=32, norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
               dropout=0.1)
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                 variance_type="fixed_large", clip_sample=True)


def make_pipeline(folder: Path, config: dict, seed: int = 0, **scheduler) -> "diffusers.UNet2DModel":
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**config)
    with torch.no_grad():  # every weight random and non-zero (the zero-initialised layers too)
        for p in unet.parameters():
            p.normal_(0, 0.05)
    sched = diffusers.DDPMScheduler(**{**SCHEDULER, **scheduler})
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return unet.eval()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    unet = make_pipeline(root / "pipe", SMALL)
    import_diffusers(root / "pipe", root / "run")
    return root, unet


def test_imported_network_equals_diffusers_at_every_time(small):
    root, unet = small
    model, _ = load_run(root / "run")
    assert model.backbone.time_offset == 1 and model.schedule.timesteps == 1000
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for t in (1, 2, 10, 500, 999, 1000):
            ours = model.backbone(x, torch.full((3,), t))
            theirs = unet(x, torch.full((3,), t - 1)).sample
            assert (ours - theirs).abs().max() < 1e-5, t


def test_the_released_cifar10_configuration_imports_exactly(tmp_path):
    unet = make_pipeline(tmp_path / "pipe", CIFAR10, seed=3)
    import_diffusers(tmp_path / "pipe", tmp_path / "run")
    model, _ = load_run(tmp_path / "run")
    assert sum(p.numel() for p in model.backbone.parameters()) == 35_746_307 == sum(p.numel() for p in unet.parameters())
    import tomllib

    backbone = tomllib.loads((tmp_path / "run" / "recipe.toml").read_text())["backbone"]
    assert backbone["downsample_padding"] == "same" and backbone["attn_resolutions"] == [16]
    assert backbone["channel_mult"] == [1, 2, 2, 2] and backbone["time_offset"] == 1
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for t in (1, 400, 1000):
            diff = (model.backbone(x, torch.full((2,), t)) - unet(x, torch.full((2,), t - 1)).sample).abs().max()
            assert diff < 1e-5, t


def test_one_ancestral_step_equals_ddpm_scheduler(small):
    root, unet = small
    model, _ = load_run(root / "run")
    scheduler = diffusers.DDPMScheduler.from_pretrained(root / "pipe", subfolder="scheduler")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for t in (1000, 600, 2):
            rs = model.reverse_step(x, model.time(t, 2, x.device), clip_x0=True)
            ours = rs.p.sample(torch.Generator().manual_seed(9))
            eps = unet(x, torch.full((2,), t - 1)).sample
            theirs = scheduler.step(eps, t - 1, x, generator=torch.Generator().manual_seed(9)).prev_sample
            # diffusers forms 1 - abar_t and the posterior coefficients in float32 (gendiff: float64
            # tables): near t = 1, where 1 - abar_t ~ 3e-4, its rounding reaches ~5e-5
            assert (ours - theirs).abs().max() < (1e-5 if t > 10 else 1e-4), t


def test_a_deterministic_ddim_trajectory_equals_diffusers(small):
    from gendiff.samplers import DDIM

    root, unet = small
    model, _ = load_run(root / "run")
    scheduler = diffusers.DDIMScheduler.from_config(json.loads((root / "pipe" / "scheduler" / "scheduler_config.json")
                                                               .read_text()), set_alpha_to_one=True)
    scheduler.set_timesteps(10)
    times = [int(k) + 1 for k in scheduler.timesteps]  # diffusers' timestep k is the paper's t = k + 1

    class OnTheirGrid(DDIM):
        def grid(self, T):
            return times

    seen = []
    ours_sampler = OnTheirGrid(steps=10, eta=0.0, clip_x0=True)
    prior = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        x = prior.clone()
        for i, t in enumerate(times):  # gendiff's update, step by step, beside diffusers' step
            last = i + 1 == len(times)
            pred = model.predict(x, model.time(t, 2, x.device), clip_x0=True)
            a_t, a_s = (ours_sampler._abar(model, s, x) for s in (t, 0 if last else times[i + 1]))
            x = ours_sampler.update(x, pred, a_t, a_s, last, {}, None)
            seen.append(x)
        y = prior.clone()
        for i, k in enumerate(scheduler.timesteps):
            y = scheduler.step(unet(y, k).sample, k, y, eta=0.0, use_clipped_model_output=True).prev_sample
            assert (seen[i] - y).abs().max() < 1e-5, i
        # and the sampler as gendiff runs it gives the same end point
        model.prior_sample = lambda shape, generator=None: prior.clone()
        assert (ours_sampler.sample(model, (2, 3, 16, 16)) - y).abs().max() < 1e-5


def test_export_loads_in_ddpm_pipeline_and_round_trips_bit_for_bit(small, tmp_path):
    root, unet = small
    export_diffusers(root / "run", tmp_path / "exp")
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "exp")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for k in (0, 500, 999):
            assert (pipe.unet(x, k).sample - unet(x, k).sample).abs().max() < 1e-6
    images = pipe(batch_size=1, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0))
    assert images.images.shape == (1, 16, 16, 3)
    import_diffusers(tmp_path / "exp", tmp_path / "again")
    first, _ = load_run(root / "run")
    second, _ = load_run(tmp_path / "again")
    a, b = first.backbone.state_dict(), second.backbone.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "again" / "recipe.toml").read_text().split("[gendiff]")[0] == \
        (root / "run" / "recipe.toml").read_text().split("[gendiff]")[0]


def test_a_model_trained_here_exports_with_its_time_shift_folded(quick_run, tmp_path):
    """A gendiff U-Net embeds t (time_offset 0); exported, diffusers' network embeds t - 1 with the
    shift folded into its first time layer: the same function up to float32 rounding."""
    model, _ = load_run(quick_run)
    assert model.backbone.time_offset == 0
    export_diffusers(quick_run, tmp_path / "exp")
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "exp")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        for t in (1, 50, 100):
            ours = model.backbone(x, torch.full((4,), t))
            theirs = pipe.unet(x, torch.full((4,), t - 1)).sample
            assert (ours - theirs).abs().max() < 1e-4 * max(1.0, float(ours.abs().max())), t
    scheduler = json.loads((tmp_path / "exp" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["num_train_timesteps"] == 100 and scheduler["variance_type"] == "fixed_large"


def test_build_accepts_a_diffusers_unet_directly(small):
    import gendiff

    root, unet = small
    imported, _ = load_run(root / "run")
    recipe = {k: v for k, v in json.loads(json.dumps(imported.recipe)).items() if k not in ("backbone", "gendiff")}
    model = gendiff.build(recipe, model=unet)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([1, 700])
    with torch.no_grad():
        assert torch.allclose(model.predict(x, t).eps, imported.predict(x, t).eps, atol=1e-5)
    assert model.training_loss(torch.rand(2, 3, 16, 16) * 2 - 1).shape == ()
    with pytest.raises(Exception, match="not a model gendiff can call"):
        gendiff.build(recipe, model=diffusers.DDPMScheduler())


def test_the_cli_imports_samples_and_exports(small, tmp_path):
    root, _ = small
    runner = CliRunner()
    res = runner.invoke(app, ["import", "diffusers", str(root / "pipe"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sample", str(tmp_path / "run"), "--sampler", "ddim", "--steps", "4", "--n", "2",
                              "--out", str(tmp_path / "s"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s" / "samples.npz")["samples"].shape == (2, 16, 16, 3)
    res = runner.invoke(app, ["export", "diffusers", str(tmp_path / "run"), "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "exp" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    again = runner.invoke(app, ["export", "diffusers", str(tmp_path / "run"), "--out", str(tmp_path / "exp")])
    assert again.exit_code == 1 and "not empty" in " ".join(again.output.split())


class NotATensor:
    """Anything pickled beside the tensors: weights_only loading must refuse it."""

    def __init__(self):
        self.payload = "print('this would run')"


def _broken_copy(small, tmp_path, name):
    root, _ = small
    folder = tmp_path / name
    shutil.copytree(root / "pipe", folder)
    return folder


@pytest.mark.parametrize("damage, message", [
    ("missing-config", "unet/config.json is missing"),
    ("missing-weights", "has no diffusion_pytorch_model.safetensors"),
    ("scale-shift", "resnet_time_scale_shift = 'scale_shift', which gendiff's unet cannot represent"),
    ("heads", "attention_head_dim = 8"),
    ("pickle", "was refused: it is not a plain file of tensors"),
    ("schedule", "beta_schedule = 'sigmoid'"),
    ("extra-weight", "that gendiff's unet has no place for"),
])
def test_bad_folders_are_refused_and_nothing_is_written(small, tmp_path, damage, message):
    folder = _broken_copy(small, tmp_path, damage)
    unet_dir = folder / "unet"
    config = json.loads((unet_dir / "config.json").read_text())
    if damage == "missing-config":
        (unet_dir / "config.json").unlink()
    elif damage == "missing-weights":
        (unet_dir / "diffusion_pytorch_model.safetensors").unlink()
    elif damage in ("scale-shift", "heads"):
        config.update({"resnet_time_scale_shift": "scale_shift"} if damage == "scale-shift" else {"attention_head_dim": 8})
        (unet_dir / "config.json").write_text(json.dumps(config))
    elif damage == "pickle":
        from safetensors.torch import load_file

        state = load_file(str(unet_dir / "diffusion_pytorch_model.safetensors"))
        (unet_dir / "diffusion_pytorch_model.safetensors").unlink()
        torch.save({**state, "evil": NotATensor()}, unet_dir / "diffusion_pytorch_model.bin")
    elif damage == "schedule":
        path = folder / "scheduler" / "scheduler_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "beta_schedule": "sigmoid"}))
    elif damage == "extra-weight":
        from safetensors.torch import load_file, save_file

        state = load_file(str(unet_dir / "diffusion_pytorch_model.safetensors"))
        save_file({**state, "class_embedding.weight": torch.zeros(10, 128)}, str(unet_dir / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(InteropError, match=message.replace("(", r"\(").replace("[", r"\[")):
        import_diffusers(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, ["import", "diffusers", str(folder), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "nothing was written" in " ".join(res.output.split()).lower()
    assert not (tmp_path / "out").exists()


def test_a_legacy_bin_of_tensors_imports(small, tmp_path):
    from safetensors.torch import load_file

    folder = _broken_copy(small, tmp_path, "legacy")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    import_diffusers(folder, tmp_path / "run")
    a, _ = load_run(tmp_path / "run")
    b, _ = load_run(small[0] / "run")
    assert all(torch.equal(a.backbone.state_dict()[k], v) for k, v in b.backbone.state_dict().items())


def test_schedules_map_to_the_same_betas():
    from gendiff.interop import scheduler_tables
    import gendiff

    for kind in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        theirs = diffusers.DDPMScheduler(num_train_timesteps=200, beta_schedule=kind, beta_start=1e-4, beta_end=0.02)
        tables = scheduler_tables(dict(theirs.config))
        model = gendiff.build({**tables, "data": {"shape": [1, 4, 4], "levels": 256}},
                              model=lambda x, t: torch.zeros_like(x))
        assert torch.allclose(model.schedule.betas().float(), theirs.betas, atol=1e-7), kind
