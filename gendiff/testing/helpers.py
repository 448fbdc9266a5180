"""Small shared pieces of the conformance suites: example instances, closeness, batches, grid times."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..component import construct


def example_instance(cls: type, **context: Any):
    """An instance of ``cls`` built from its ``example_args`` (or its defaults)."""
    return construct(cls, getattr(cls, "family", "component"), dict(getattr(cls, "example_args", {})), **context)


def _close(a: Tensor, b: Tensor, what: str, rtol=1e-5, atol=1e-6) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    ok = torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)
    assert ok, f"{what}: max difference {(a.double() - b.double()).abs().max().item():.3g}"


def _batch(dtype=torch.float64, shape=(6, 2, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1)
    noise = torch.randn(shape, generator=g, dtype=dtype)
    return x0, noise, g


def _times(schedule, n: int) -> Tensor:
    """n of the schedule's grid times, spread over steps {1..T} and always including steps 1, 2
    and T, in the schedule's convention (integers, or i / T for a continuous schedule)."""
    T = schedule.timesteps
    steps = torch.linspace(1, T, n).round().long()
    steps[0], steps[1], steps[-1] = 1, min(2, T), T
    return torch.stack([schedule.times(int(i), 1)[0] for i in steps])
