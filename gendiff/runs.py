"""Using a finished run: load its model from a run or checkpoint folder, draw samples in
seeded batches, and write them out. Everything here works from the files alone (the recipe
stored in the checkpoint builds the model); nothing depends on the trainer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from .checkpoint import CheckpointError, load_checkpoint, load_latest, load_weights
from .diffusion import Diffusion
from .images import grid, save_png, to_uint8
from .recipe import tomllib
from .runtime import autocast, step_generator


def load_run(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None, ema: bool = True,
             device: str | torch.device = "cpu", plugins=None) -> tuple[Diffusion, Path]:
    """A model from a run folder (its latest good checkpoint) or from a checkpoint folder.
    The checkpoint's own recipe builds the model; ``ema`` selects the EMA weights."""
    from .builder import build

    path = Path(path)
    ckpt = None
    if checkpoint is not None:
        ckpt_path = Path(checkpoint)
        if not ckpt_path.is_absolute() and not ckpt_path.exists() and (path / "checkpoints" / ckpt_path).exists():
            ckpt_path = path / "checkpoints" / ckpt_path
    elif (path / "manifest.json").is_file():
        ckpt_path = path
    elif path.is_dir():
        ckpt = load_latest(path)
        if ckpt is None:
            raise CheckpointError(f"{path} has no usable checkpoint (expected {path}/checkpoints/step-N/).")
        ckpt_path = ckpt.path
    else:
        raise CheckpointError(f"no run or checkpoint folder at {path}")
    if not Path(ckpt_path).is_dir():
        raise CheckpointError(f"no checkpoint folder at {ckpt_path}")
    ckpt = ckpt or load_checkpoint(ckpt_path)
    model = build(tomllib.loads(ckpt.recipe_text), plugins=plugins)
    load_weights(model.backbone, ckpt.ema if ema else ckpt.model, ckpt_path, "EMA weights" if ema else "weights")
    return model.to(device).eval(), Path(ckpt_path)


def generate(model: Diffusion, n: int, seed: int = 0, batch_size: int = 256, sampler=None, console=None,
             progress: bool = True, precision: str = "fp32") -> torch.Tensor:
    """``n`` samples in batches, with a progress bar; reproducible from ``seed``. With
    ``precision = "bf16"`` the network runs under bf16 autocast (the sampler's arithmetic
    stays in float32)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out = []
    device = model.device
    with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console or Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("sampling", total=n)
        for i, start in enumerate(range(0, n, batch_size)):
            g = step_generator(seed, i, 4, device)
            with autocast(device, precision):
                out.append(model.sample(min(batch_size, n - start), generator=g, sampler=sampler).float().cpu())
            bar.update(task, advance=min(batch_size, n - start))
    return torch.cat(out)


def write_samples(x: torch.Tensor, levels: int, out: Path, pngs: bool = True) -> np.ndarray:
    """samples.npz (uint8 N x H x W x C, key "samples"), a grid, and one PNG per sample."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = to_uint8(x, levels)
    np.savez_compressed(out / "samples.npz", samples=pictures, levels=levels)
    save_png(grid(pictures[:256]), out / "grid.png", scale=max(1, 64 // pictures.shape[1]))
    if pngs:
        width = len(str(len(pictures) - 1))
        for i, picture in enumerate(pictures):
            save_png(picture, out / f"{i:0{width}d}.png")
    return pictures
