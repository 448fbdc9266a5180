"""Using a finished run: load its model from a run or checkpoint folder, draw samples in
seeded batches, and write them out. Everything here works from the files alone (the recipe
stored in the checkpoint builds the model); nothing depends on the trainer."""

from __future__ import annotations

import inspect
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rich.console import Console

from .conditioning import GuidanceWarning, class_names
from .checkpoint import CheckpointError, load_checkpoint, load_components, load_latest
from .diffusion import Diffusion
from .errors import GendiffError
from .images import grid, save_png, to_uint8
from .recipe import tomllib
from .runtime import autocast, step_generator


def load_run(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None, ema: bool = True,
             device: str | torch.device = "cpu", plugins=None) -> tuple[Diffusion, Path]:
    """A model from a run folder (its latest good checkpoint) or from a checkpoint folder.
    The checkpoint's own recipe builds the model; ``ema`` selects the EMA weights (of every
    trainable component: a learned schedule's too, and the schedule's tables follow them)."""
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
    # every trainable component (the backbone, a learned schedule, ...), checked by name and shape
    load_components(model.trainable(), ckpt.ema if ema else ckpt.model, ckpt_path, "EMA weights" if ema else "weights")
    return model.to(device).eval(), Path(ckpt_path)


def choose_sampler(model: Diffusion, name: str | None = None, steps: int | None = None,
                   overrides: Sequence[str] = ()):
    """The sampler a command draws ``model``'s samples with: the recipe's ``[sampler]`` table, or
    sampler ``name``'s defaults when it names another sampler; then ``steps`` and ``overrides``
    (``sampler.KEY=VALUE``, TOML values) applied. None when nothing is asked (the model's own).
    Checked against the model's components as ``gendiff run`` checks a recipe."""
    from .builder import check_compatibility
    from .component import construct
    from .plugins import plugin_system
    from .recipe import apply_overrides

    if name is None and steps is None and not overrides:
        return None
    table = dict(model.recipe.get("sampler", {"name": model.sampler.name}))
    table.pop("guidance", None)  # gendiff's own key, never the sampler's
    if name is not None and name != table.get("name"):
        table = {"name": name}
    cls = plugin_system().registry("sampler").get(table.pop("name"))
    wrong = [o for o in overrides if not o.strip().startswith("sampler.")]
    if wrong:
        raise GendiffError(f"--set {wrong[0]!r}: a run's samples take sampler.KEY=VALUE only (the other tables are "
                           f"fixed by training), e.g. --set sampler.eta=0.5")
    if steps is not None:
        if "steps" not in inspect.signature(cls).parameters:
            raise GendiffError(f"--steps: sampler '{cls.name}' takes no steps (it runs the model's "
                               f"{model.timesteps} steps); choose one that does with --sampler, e.g. ddim")
        table["steps"] = steps
    raw = {"sampler": table}
    problems = apply_overrides(raw, overrides)
    if problems:
        raise GendiffError("; ".join(problems))
    chosen = construct(cls, "sampler", raw["sampler"])
    check_compatibility({"sampler": chosen, "schedule": model.schedule, "parameterization": model.parameterization,
                         "variance": model.variance})
    return chosen


def generate(model: Diffusion, n: int, seed: int = 0, batch_size: int = 256, sampler=None, console=None,
             progress: bool = True, precision: str = "fp32", cond=None, guidance: float | None = None) -> torch.Tensor:
    """``n`` samples in batches, with a progress bar; reproducible from ``seed``. With
    ``precision = "bf16"`` the network runs under bf16 autocast (the sampler's arithmetic
    stays in float32). A conditional model samples the labels ``cond`` (n,) (or one label for
    all; default: the classes 0, 1, ..., K-1 in turn) with guidance weight ``guidance`` (default:
    the recipe's); see :meth:`Diffusion.sample`."""
    from .progress import Progress

    conditioning = model.conditioning
    guidance = conditioning.check_guidance(guidance)  # checked (and warned about) once
    labels = None
    if conditioning.active or cond is not None:  # an unconditional model refuses labels here
        labels = conditioning.labels(conditioning.default_labels(n) if cond is None else cond, n)
    out = []
    device = model.device
    with Progress("sampling", n, console or Console(stderr=True), progress) as bar:
        for i, start in enumerate(range(0, n, batch_size)):
            g = step_generator(seed, i, 4, device)
            size = min(batch_size, n - start)
            part = None if labels is None else labels[start:start + size]

            def steps(step, total, start=start, size=size):  # the bar moves with the reverse steps
                bar.update(start + size * step / max(total, 1))

            with autocast(device, precision), warnings.catch_warnings():
                warnings.simplefilter("ignore", GuidanceWarning)  # said once above
                x = model.sample(size, generator=g, sampler=sampler, progress=steps, cond=part, guidance=guidance)
            out.append(_checked_samples(x, size, model, sampler or model.sampler))
            bar.update(start + size)
    return torch.cat(out)


def _checked_samples(x, size: int, model: Diffusion, sampler) -> torch.Tensor:
    """A sampler's output as float32 on the CPU, refused (naming the sampler and its plugin) when it
    is not a tensor of ``size`` samples of the data's shape or holds NaN or inf: wrong pictures are
    never written as if they were samples."""
    from .plugins import plugin_system

    name = getattr(sampler, "name", type(sampler).__name__)
    try:
        plugin = plugin_system().registry("sampler").plugin_of(name)
    except GendiffError:
        plugin = "?"
    expected = (size, *model.data_shape)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise GendiffError(f"sampler '{name}' (plugin '{plugin}') returned {got} for a batch that must be {expected} "
                           f"(samples, channels, height, width); nothing was written.")
    x = x.float().cpu()
    if not bool(torch.isfinite(x).all()):
        raise GendiffError(f"sampler '{name}' (plugin '{plugin}') returned NaN or inf in "
                           f"{int((~torch.isfinite(x)).flatten(1).any(1).sum())} of {size} samples; nothing was written. "
                           f"The model or the sampler is broken (a run whose weights became non-finite?).")
    return x


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


def check_sample_count(model: Diffusion, n: int, option: str = "--n") -> None:
    """Refuse ``n`` samples that could not be held in this machine's memory (float32 while drawn,
    uint8 written), before any is drawn."""
    import math

    from .builder import memory_bytes

    need, have = n * math.prod(model.data_shape) * 5, memory_bytes()
    if have and need > have:
        raise GendiffError(f"{option} asks for {n:,} samples of {tuple(model.data_shape)}: about {need / 2**30:,.1f} GiB, "
                           f"more than this machine's {have / 2**30:,.1f} GiB. Draw them in several calls with "
                           f"different --seed values.")


#: the PNGs write_samples names (0.png, 017.png, ...): replaced as a set, with samples.npz
SAMPLE_PNG = re.compile(r"[0-9]+\.png")


def figures_folder(out: str | os.PathLike) -> Path:
    """Where ``gendiff sample --out DIR`` puts its figures (grid, progressive, completions): the
    sibling folder ``DIR-figures``, so that DIR holds only the samples and any tool that reads a
    folder of images (torch-fidelity, clean-fid, which also searches subfolders) takes DIR as is."""
    out = Path(out).resolve()
    return out.parent / f"{out.name}-figures"


def write_samples(x: torch.Tensor, levels: int, out: str | os.PathLike, grid_path: str | os.PathLike | None = None,
                  labels=None, names=()) -> np.ndarray:
    """The samples as files other tools read: one PNG per sample (``0.png``, ``1.png``, ... zero-
    padded to one width) and samples.npz (uint8 N x H x W x C, key "samples"; "labels" (N,) for a
    conditional model; "levels") in ``out``, nothing else; and a grid of them at ``grid_path``
    (default: ``figures_folder(out) / "grid.png"``), one labelled row per class when there are
    labels. Returns the uint8 pictures."""
    from PIL import Image

    from .files import replace_files, writable_folder

    out = writable_folder(out, "the samples' folder")
    grid_path = Path(grid_path) if grid_path is not None else figures_folder(out) / "grid.png"
    writable_folder(grid_path.parent, "the figures' folder")
    pictures = to_uint8(x, levels)
    extra = {} if labels is None else {"labels": np.asarray(labels, dtype=np.int64)}
    width = len(str(len(pictures) - 1))

    def write(tmp: Path) -> None:
        for i, picture in enumerate(pictures):
            Image.fromarray(picture[..., 0] if picture.shape[2] == 1 else picture).save(tmp / f"{i:0{width}d}.png")
        with open(tmp / "samples.npz", "wb") as fh:
            np.savez_compressed(fh, samples=pictures, levels=levels, **extra)

    # the set as a whole: an earlier, larger set leaves no numbered PNG behind, a failure leaves the old set
    replace_files(out, write, lambda name: name == "samples.npz" or SAMPLE_PNG.fullmatch(name) is not None)
    scale = max(1, 64 // pictures.shape[1])
    if labels is None:
        save_png(grid(pictures[:256]), grid_path, scale=scale)
    else:
        per_row = max(1, min(16, len(pictures) // len(set(np.asarray(labels).tolist()))))
        class_grid(pictures, labels, names or class_names(int(np.max(labels)) + 1), per_row, grid_path, scale)
    return pictures
