"""Unconditional recipes behave exactly as before the conditioning / continuous-time contracts.

The fingerprints were first recorded as exact hashes from main at commit d2b16fc, before the
contracts changed (issue 12), and checked bit for bit on every later tree on one machine. Bit
equality does not survive another CPU or torch release (a different kernel rounds the last bits of
a sample chain differently: seen twice, with torch 2.14.1 and on another machine), so the values
below are numbers, re-recorded from main at cc3e21c (whose tree matched d2b16fc's hashes bit for
bit on the machine that recorded them) and compared to a relative 1e-5 (losses, bound terms) or
1e-4 (samples, whose last bits compound over the chain): far below any change of meaning (a wrong
coefficient, a shifted index, a missed clip moves them by 1e-3 or more), far above rounding.
A tensor's fingerprint is its sum, its sum of squares and its sum weighted by position.
"""

from __future__ import annotations

import math

import pytest
import torch

from gendiff.samplers import Ancestral
from gendiff.testing import tiny_model

from fakes import digits_recipe


def digest(x: torch.Tensor) -> list[float]:
    """(sum, sum of squares, position-weighted sum) of a tensor, in float64."""
    v = x.detach().double().flatten()
    where = torch.linspace(-1.0, 1.0, len(v), dtype=torch.float64)
    return [v.sum().item(), (v * v).sum().item(), (v * where).sum().item()]


def close(got, want, rel: float, label: str = "") -> None:
    if isinstance(want, dict):
        assert got.keys() == want.keys(), label
        for key in want:
            close(got[key], want[key], SAMPLE_REL if key in SAMPLE_KEYS else rel, f"{label}{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), label
        for i, (a, b) in enumerate(zip(got, want)):
            close(a, b, rel, f"{label}[{i}]")
    else:
        assert math.isclose(got, want, rel_tol=rel, abs_tol=1e-9), f"{label}: {got!r} != {want!r}"


VALUE_REL, SAMPLE_REL = 1e-5, 1e-4
SAMPLE_KEYS = {"ancestral", "ddim", "respaced", "dpm-solver++"}


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
    out = {"loss": model.training_loss(x0, generator=torch.Generator().manual_seed(2)).item()}
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
    return {"losses": list(summary.losses), "weights": digest(trained)}


EXPECTED_MODELS = {'eps-simple': {'loss': 0.9666546583175659,
                'nll': [33.91804923862219, 44.87582543325693, -5.007947686257996],
                'ancestral': [-9.753490242408589, 52.10018621979117, 0.2265047198382062]},
 'masking': {'loss': 1.3342984914779663,
             'nll': [8.001308143138885, 0.5104362962470846, 0.10218419768209527],
             'ancestral': [-6.6666653752326965, 57.77777808242379, 3.5649122733818865]},
 'mu-mse': {'loss': 0.41026198863983154,
            'nll': [15854.415340423584, 37616370.90443649, -3583.9619521370414],
            'ancestral': [5.0474696308374405, 3.21415930946713, -2.9422420068006767]},
 'v-hybrid': {'loss': 0.9253391623497009,
              'nll': [37.98013907670975, 68.81614408043765, -6.262907202768175],
              'ancestral': [-9.532450934872031, 47.94308757718247, -0.6683410807071559]},
 'x0-vlb': {'loss': 5805.8876953125,
            'nll': [23208.01201879978, 64557144.59591591, -5773.819158425059],
            'ancestral': [5.251799941062927, 3.2112634576222625, -2.914362868196086]}}
EXPECTED_SAMPLERS = {'ancestral': [-1.050156258046627, 48.60413082994127, 2.890378119286738],
 'ddim': [1.1567492112517357, 54.57930742069709, 4.6172911586730105],
 'respaced': [-1.4118738709948957, 50.1395694269227, 3.398434654716403],
 'dpm-solver++': [2.9070131182670593, 55.17357059412204, 4.8788614174645195]}
EXPECTED_TRAINING = {'losses': [0.9722836017608643, 0.9967937469482422, 1.0243308544158936],
 'weights': [644.496303214938, 1022.6700924936513, 25.21936282765746]}


@pytest.mark.parametrize("key", sorted(MODELS))
def test_losses_bound_and_samples_are_as_before(key):
    threads = torch.get_num_threads()
    try:
        close(compute_model(key), EXPECTED_MODELS[key], VALUE_REL)
    finally:
        torch.set_num_threads(threads)


def test_every_sampler_is_as_before():
    threads = torch.get_num_threads()
    try:
        close(compute_samplers(), EXPECTED_SAMPLERS, SAMPLE_REL)
    finally:
        torch.set_num_threads(threads)


def test_training_is_as_before(tmp_path):
    threads = torch.get_num_threads()
    try:
        close(compute_training(tmp_path), EXPECTED_TRAINING, VALUE_REL)
    finally:
        torch.set_num_threads(threads)
