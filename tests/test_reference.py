"""Unconditional recipes behave exactly as before the conditioning / continuous-time contracts.

The expected fingerprints below were recorded from main at commit d2b16fc, before the contracts
changed (issue 12), by running this file's ``compute`` functions there, and re-recorded from main
at a5731d9 when pip began to resolve torch 2.14.1, whose kernels round some last bits differently
(2026-12-02; the tree that added trainable components gives the same values). Every value is exact:
a loss as a float hex string, a tensor as the SHA-256 of its float64 bytes. A change that moves
any bit of an unconditional model's losses, bound or samples for a fixed seed fails here.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from gendiff.samplers import Ancestral
from gendiff.testing import tiny_model

from fakes import digits_recipe


def digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().double().contiguous().numpy().tobytes()).hexdigest()[:16]


def _data(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    K = model.levels
    k = torch.randint(0, K, (8, *model.data_shape), generator=g)
    return (k.double() * 2 / (K - 1) - 1).float()


MODELS = {
    "eps-simple": dict(),
    "v-hybrid": dict(parameterization="v", variance="learned-range", weighting="hybrid"),
    "x0-vlb": dict(parameterization="x0", variance="fixed-small", weighting="vlb"),
    "mu-mse": dict(parameterization="mu", weighting="mse-mu"),
    "masking": dict(parameterization="x0-logits", variance="categorical", weighting="vlb", process="masking"),
}
SAMPLERS = {"ancestral": {}, "ddim": {"steps": 7, "eta": 0.5}, "respaced": {"steps": 7}, "dpm-solver++": {"steps": 7}}


def compute_model(key: str) -> dict[str, str]:
    torch.set_num_threads(1)
    model = tiny_model(**MODELS[key], timesteps=20 if key != "masking" else 50)
    with torch.no_grad():  # non-zero weights everywhere (the last layer starts at zero)
        for p in model.backbone.parameters():
            p.add_(0.05)
    x0 = _data(model)
    out = {"loss": model.training_loss(x0, generator=torch.Generator().manual_seed(2)).item().hex()}
    out["nll"] = digest(model.nll_bpd(x0[:4], generator=torch.Generator().manual_seed(3)).terms)
    # mu with clip_x0 is the one intended change (the official code keeps the network's mean)
    sampler = Ancestral(clip_x0=key != "mu-mse")
    out["ancestral"] = digest(model.sample(3, generator=torch.Generator().manual_seed(4), sampler=sampler))
    return out


def compute_samplers() -> dict[str, str]:
    from gendiff.component import construct
    from gendiff.plugins import registry

    torch.set_num_threads(1)
    model = tiny_model(timesteps=20)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05)
    out = {}
    for name, args in SAMPLERS.items():
        sampler = construct(registry("sampler").get(name), "sampler", args)
        out[name] = digest(model.sample(3, generator=torch.Generator().manual_seed(5), sampler=sampler))
    return out


def compute_training(tmp_path) -> dict[str, str]:
    from gendiff.training import Trainer, prepare

    torch.set_num_threads(1)
    recipe = digits_recipe(timesteps=30, steps=3, batch_size=16, checkpoint_every=3)
    setup = prepare(recipe)
    summary = Trainer(setup, tmp_path / "run", progress=False).train()
    trained = torch.cat([p.detach().flatten() for p in setup.model.backbone.parameters()])
    return {"losses": [v.hex() for v in summary.losses], "weights": digest(trained)}


EXPECTED_MODELS = {
    "eps-simple": {"loss": "0x1.eeed5c0000000p-1", "nll": "e062447ae987df1a", "ancestral": "cee0635361f40a5b"},
    "masking": {"loss": "0x1.5594940000000p+0", "nll": "3fa1be8692d65800", "ancestral": "29607f2e996e6200"},
    "mu-mse": {"loss": "0x1.a41bb80000000p-2", "nll": "86192b6fff57e2f6", "ancestral": "d573e1a0a63eb277"},
    "v-hybrid": {"loss": "0x1.d9c60e0000000p-1", "nll": "d976d8cfd9a80be9", "ancestral": "79fde5e37a60c65f"},
    "x0-vlb": {"loss": "0x1.6ade340000000p+12", "nll": "78f088c593524fa4", "ancestral": "c252eaa5491e2c1b"},
}
EXPECTED_SAMPLERS = {"ancestral": "5fef55ecd5d242d9", "ddim": "1a5575ae00bd4c0a", "respaced": "5c8f5da170c567ab",
                     "dpm-solver++": "7ee86817ee71d48a"}
EXPECTED_TRAINING = {"losses": ["0x1.f1cf280000000p-1", "0x1.fe5bc00000000p-1", "0x1.063a8c0000000p+0"],
                     "weights": "e9779c35843fff69"}


@pytest.mark.parametrize("key", sorted(MODELS))
def test_losses_bound_and_samples_are_bit_identical_to_before(key):
    threads = torch.get_num_threads()
    try:
        assert compute_model(key) == EXPECTED_MODELS[key]
    finally:
        torch.set_num_threads(threads)


def test_every_sampler_is_bit_identical_to_before():
    threads = torch.get_num_threads()
    try:
        assert compute_samplers() == EXPECTED_SAMPLERS
    finally:
        torch.set_num_threads(threads)


def test_training_is_bit_identical_to_before(tmp_path):
    threads = torch.get_num_threads()
    try:
        assert compute_training(tmp_path) == EXPECTED_TRAINING
    finally:
        torch.set_num_threads(threads)
