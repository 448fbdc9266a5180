"""Using a finished run: load its model from a run or checkpoint folder, draw samples in
seeded batches, and write them out. Everything here works from the files alone (the recipe
stored in the checkpoint builds the model); nothing depends on the trainer."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from .conditioning import GuidanceWarning, class_names
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
             progress: bool = True, precision: str = "fp32", cond=None, guidance: float | None = None) -> torch.Tensor:
    """``n`` samples in batches, with a progress bar; reproducible from ``seed``. With
    ``precision = "bf16"`` the network runs under bf16 autocast (the sampler's arithmetic
    stays in float32). A conditional model samples the labels ``cond`` (n,) (or one label for
    all; default: the classes 0, 1, ..., K-1 in turn) with guidance weight ``guidance`` (default:
    the recipe's); see :meth:`Diffusion.sample`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    conditioning = model.conditioning
    guidance = conditioning.check_guidance(guidance)  # checked (and warned about) once
    labels = None
    if conditioning.active or cond is not None:  # an unconditional model refuses labels here
        labels = conditioning.labels(conditioning.default_labels(n) if cond is None else cond, n)
    out = []
    device = model.device
    with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console or Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("sampling", total=n)
        for i, start in enumerate(range(0, n, batch_size)):
            g = step_generator(seed, i, 4, device)
            size = min(batch_size, n - start)
            part = None if labels is None else labels[start:start + size]
            with autocast(device, precision), warnings.catch_warnings():
                warnings.simplefilter("ignore", GuidanceWarning)  # said once above
                out.append(model.sample(size, generator=g, sampler=sampler, cond=part, guidance=guidance).float().cpu())
            bar.update(task, advance=size)
    return torch.cat(out)


def dataset_labels(model: Diffusion, n: int, seed: int = 0) -> torch.Tensor | None:
    """n labels for a conditional model's samples with the classes in the proportions of its
    training split (uniform for a model built without a dataset), shuffled by ``seed``: what FID
    compares against a reference of the whole data. None for an unconditional model."""
    from .conditioning import proportional_labels

    if not model.conditioning.active:
        return None
    dataset = getattr(model, "dataset", None)
    counts = (torch.bincount(dataset.labels("train"), minlength=model.conditioning.num_classes)
              if dataset is not None else torch.ones(model.conditioning.num_classes))
    return proportional_labels(counts, n, seed)


def class_grid(pictures: np.ndarray, labels, names, per_row: int, path: Path, scale: int = 1) -> None:
    """A PNG with one labelled row per class present in ``labels``: that class's first ``per_row``
    pictures (uint8 N x H x W x C), its number and name written to the left."""
    from .images import save_labelled_rows

    labels = np.asarray(labels)
    rows, texts = [], []
    for c in sorted(set(labels.tolist())):
        rows.append(pictures[labels == c][:per_row])
        texts.append(f"{c} {names[c]}" if names[c] != str(c) else str(c))
    save_labelled_rows(rows, texts, path, scale)


def write_samples(x: torch.Tensor, levels: int, out: Path, pngs: bool = True, labels=None, names=()) -> np.ndarray:
    """samples.npz (uint8 N x H x W x C, key "samples"; "labels" (N,) for a conditional model), a
    grid (one labelled row per class when there are labels), and one PNG per sample."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = to_uint8(x, levels)
    extra = {} if labels is None else {"labels": np.asarray(labels, dtype=np.int64)}
    np.savez_compressed(out / "samples.npz", samples=pictures, levels=levels, **extra)
    scale = max(1, 64 // pictures.shape[1])
    if labels is None:
        save_png(grid(pictures[:256]), out / "grid.png", scale=scale)
    else:
        per_row = max(1, min(16, len(pictures) // len(set(np.asarray(labels).tolist()))))
        class_grid(pictures, labels, names or class_names(int(np.max(labels)) + 1), per_row, out / "grid.png", scale)
    if pngs:
        width = len(str(len(pictures) - 1))
        for i, picture in enumerate(pictures):
            save_png(picture, out / f"{i:0{width}d}.png")
    return pictures
