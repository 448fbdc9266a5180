"""Where and how a model runs: device, numeric precision, and the seeded generators that make
training and sampling reproducible. Shared by training (:mod:`gendiff.training`) and by
everything that uses a finished run (:mod:`gendiff.runs`, :mod:`gendiff.evaluation`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import DEVICES
from .errors import TrainingError


def choose_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``; a CUDA request without CUDA is an error."""
    if name not in DEVICES:
        raise TrainingError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device = \"cuda\" but no CUDA device is available; use \"cpu\" or \"auto\".")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast is worth it: a CUDA device with bf16, or a CPU with native bf16 (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(name: str, device: torch.device) -> str:
    """``auto`` is bf16 where :func:`bf16_supported`, else fp32; other names pass through."""
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return name


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision: bf16 autocast, or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one (step, stream) pair, independent of everything before it.

    Streams in use: 1 data flips, 2 the diffusion draws of a training step, 3 sample grids,
    4 batches of :func:`gendiff.runs.generate`."""
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + step) * 8 + stream) % 2**63)
    return g
