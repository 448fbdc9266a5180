"""Where and how a model runs: device, numeric precision, and the seeded generators that make
training and sampling reproducible. Shared by training (:mod:`gendiff.training`) and by
everything that uses a finished run (:mod:`gendiff.runs`, :mod:`gendiff.evaluation`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import device_problem
from .errors import TrainingError


def choose_device(name: str) -> torch.device:
    """The device ``name`` asks for (:func:`device_problem` lists the spellings); ``auto`` is CUDA
    when available, else Apple's MPS when available, else the CPU. A device this machine does not
    have is a :class:`TrainingError` saying which ones it has."""
    problem = device_problem(name)
    if problem:
        raise TrainingError(problem)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TrainingError(f"device {name!r} was asked for, but no CUDA device is available; use "
                                f"\"cpu\" or \"auto\".")
        if device.index is not None and device.index >= count:
            raise TrainingError(f"device {name!r} was asked for, but this machine has {count} CUDA device(s): "
                                f"{', '.join(f'cuda:{i}' for i in range(count))}.")
    if device.type == "mps" and not _mps_available():
        raise TrainingError("device 'mps' was asked for, but Apple's MPS backend is not available here; use "
                            "\"cpu\" or \"auto\".")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast is worth it: a CUDA device with bf16, or a CPU with native bf16 (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":  # MPS: fp32 unless asked
        return False
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
