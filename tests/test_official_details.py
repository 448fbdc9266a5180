"""The official code's training details (hojonathanho/diffusion), as options that
recipes/ddpm_cifar10.toml turns on, each against a hand-computed value."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gendiff.backbones.unet import Downsample, UNet, timestep_embedding

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "recipes" / "quickstart.toml"
TINY = ["schedule.timesteps=20", "train.batch_size=8", "backbone.channels=32", "train.sample_every=0",
        "eval.samples=4", "eval.metrics=[]", "train.precision=\"fp32\"", "train.log_every=1"]


def test_the_cifar10_recipe_turns_every_detail_on():
    import tomllib

    recipe = tomllib.loads((ROOT / "recipes" / "ddpm_cifar10.toml").read_text())
    assert recipe["backbone"] | {"time_offset": 1, "downsample_padding": "same", "init": "official"} == recipe["backbone"]
    assert recipe["train"]["warmup_offset"] == 0 and recipe["train"]["ema_from_first_step"] is True


@pytest.mark.parametrize("offset, expected", [(0, [0.0, 2.5e-4, 5e-4]), (1, [2.5e-4, 5e-4, 7.5e-4])])
def test_warmup_offset(tmp_path, offset, expected):
    """The official lr * min(step / 5000, 1) starts at 0; gendiff's default at lr / warmup."""
    from gendiff.runner import run

    run(QUICK, [*TINY, "train.steps=3", "train.lr=1e-3", "train.warmup_steps=4", f"train.warmup_offset={offset}"],
        out=tmp_path / "r", progress=False)
    logged = [json.loads(line)["lr"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(expected, abs=1e-12)


def test_warmup_offset_takes_0_or_1():
    from gendiff.errors import RecipeError
    from gendiff.training import prepare

    with pytest.raises(RecipeError, match=r"train.warmup_offset: expected one of 0, 1, got 2"):
        prepare(QUICK, ["train.warmup_offset=2"])


@pytest.mark.parametrize("first", [True, False])
def test_the_ema_after_the_first_step(tmp_path, first):
    """Official: the EMA is the weights after step 1. Default: d * initial + (1 - d) * after step 1."""
    from safetensors.torch import load_file

    from gendiff.runner import run
    from gendiff.training import prepare

    overrides = [*TINY, "train.steps=1", "train.ema_decay=0.9", f"train.ema_from_first_step={str(first).lower()}"]
    initial = {k: v.clone() for k, v in prepare(QUICK, overrides).model.backbone.state_dict().items()}
    run(QUICK, overrides, out=tmp_path / "r", progress=False)
    ckpt = tmp_path / "r" / "checkpoints" / "step-1"
    weights, ema = load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))
    moved = [k for k in weights if not torch.equal(weights[k], initial[k])]
    assert moved  # the step changed the weights
    for k in moved:
        expected = weights[k] if first else 0.9 * initial[k] + 0.1 * weights[k]
        assert torch.allclose(ema[k], expected, atol=1e-7), k


def test_official_initialisation():
    net = UNet(3, 3, 32, channels=32, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[32], init="official")
    net.requires_grad_(False)
    limit_in = math.sqrt(3 / ((3 * 9 + 32 * 9) / 2))  # conv_in: fan_in 3*3*3, fan_out 32*3*3
    w = net.conv_in.weight
    assert float(w.abs().max()) <= limit_in and float(w.abs().max()) > 0.9 * limit_in
    assert float(w.var()) == pytest.approx(limit_in**2 / 3, rel=0.15)  # U(-a, a) has variance a^2 / 3
    qkv = net.down[0][1].qkv.weight  # q, k, v are three 32 -> 32 layers: fan_avg 32
    assert float(qkv.abs().max()) <= math.sqrt(3 / 32) and float(qkv.abs().max()) > 0.9 * math.sqrt(3 / 32)
    limit_temb = math.sqrt(3 / ((32 + 128) / 2))
    assert float(net.temb[0].weight.abs().max()) <= limit_temb
    zero = [net.conv_out, net.down[0][0].conv2, net.down[0][1].proj]
    assert all(float(m.weight.abs().max()) == 0 for m in zero)  # the official init_scale = 0 layers
    biases = [m.bias for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(float(b.abs().max()) == 0 for b in biases)
    default = UNet(3, 3, 32, channels=32, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[32])
    assert float(default.conv_in.bias.detach().abs().max()) > 0  # PyTorch's default init has random biases
    with pytest.raises(ValueError, match="init must be"):
        UNet(3, 3, 32, init="xavier")


def test_same_padding_by_hand():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    same, symmetric = Downsample(1, "same"), Downsample(1, "symmetric")
    for conv in (same, symmetric):
        torch.nn.init.ones_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    # TF SAME at stride 2: windows start at rows/columns 0 and 2, one zero row/column after
    assert same(x)[0, 0].tolist() == [[45.0, 39.0], [66.0, 50.0]]
    # symmetric: one zero row/column on every side, windows start at -1 and 1
    assert symmetric(x)[0, 0].tolist() == [[10.0, 24.0], [51.0, 90.0]]
    assert set(Downsample(3, "same").state_dict()) == {"weight", "bias"}  # checkpoints keep their names


def test_time_offset_embeds_t_minus_one():
    assert timestep_embedding(torch.tensor([0]), 8).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]  # sin 0, cos 0
    args = dict(channels=32, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8])
    official = UNet(1, 1, 16, time_offset=1, **args).eval()
    plain = UNet(1, 1, 16, time_offset=0, **args).eval()
    plain.load_state_dict(official.state_dict())
    with torch.no_grad():
        for p in official.parameters():  # no zero layer left: time reaches the output
            p.normal_(0, 0.1)
        plain.load_state_dict(official.state_dict())
        x = torch.randn(2, 1, 16, 16)
        t = torch.tensor([1, 1000])
        assert torch.equal(official(x, t), plain(x, t - 1))
        assert not torch.equal(official(x, t), plain(x, t))
    with pytest.raises(ValueError, match="time_offset must be 0 or 1"):
        UNet(1, 1, 16, time_offset=2)
