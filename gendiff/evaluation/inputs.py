"""Where evaluations get their images: sample sets, runs and references.

Images are uint8 arrays (N, H, W, C) on the 0..255 scale, as ``samples.npz`` stores them
(key ``samples``). A data level k of a dataset with K levels is the pixel round(255 k / (K - 1)).
"""

from __future__ import annotations

import warnings
import zipfile

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GendiffError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def levels_to_pixels(data: torch.Tensor, levels: int) -> np.ndarray:
    """uint8 levels (N, C, H, W) in {0..K-1} -> pixels (N, H, W, C) in 0..255."""
    return torch.round(data.double() * 255.0 / (levels - 1)).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def load_images(path: Path) -> np.ndarray:
    """A ``samples.npz`` file, a folder holding one, or a folder of PNG/JPEG images of one size."""
    path = Path(path)
    if path.is_dir() and (path / "samples.npz").is_file():
        path = path / "samples.npz"
    if path.is_file() and path.suffix == ".npz":
        try:
            images = np.load(path)["samples"]
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise GendiffError(f"{path} is not a samples.npz with a 'samples' array ({exc})") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
            raise GendiffError(f"{path}: 'samples' must be uint8 N x H x W x C with C = 1 or 3, got {images.dtype} {images.shape}")
        return images
    if not path.is_dir():
        raise GendiffError(f"no samples at {path}: expected a run, a checkpoint, a samples.npz or a folder of images")
    from ..images import PictureError, read_picture

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GendiffError(f"{path} holds no samples.npz and no PNG/JPEG images")
    arrays, shapes = [], {}
    for file in files:
        try:  # 16-bit grey scaled, not clipped; transparency onto white; bombs refused
            arr = np.asarray(read_picture(file), dtype=np.uint8)
        except PictureError as exc:
            raise GendiffError(f"cannot read the image {file}: {exc}") from None
        arr = arr[..., None] if arr.ndim == 2 else arr
        shapes.setdefault(arr.shape, file.name)
        arrays.append(arr)
    if len(shapes) > 1:
        listed = ", ".join(f"{'x'.join(map(str, s))} (e.g. {name})" for s, name in shapes.items())
        raise GendiffError(f"the images in {path} differ in size or channels: {listed}")
    return np.stack(arrays)


def is_run(path: Path) -> bool:
    path = Path(path)
    return (path / "checkpoints").is_dir() or (path / "manifest.json").is_file()


def run_folder(checkpoint: Path) -> Path:
    """The run folder that holds a checkpoint folder (RUN/checkpoints/step-N)."""
    return Path(checkpoint).parent.parent


def run_samples(path: Path, n: int | None, seed: int = 0, batch_size: int = 256, console=None,
                progress: bool = True, precision: str = "fp32", model=None, checkpoint=None,
                guidance: float | None = None) -> tuple[np.ndarray, Any, Path]:
    """Samples of a run's EMA model, generated once in batches and kept in
    RUN/eval/samples/seed-<seed>.npz; a later call that needs no more reuses them.
    A conditional model draws its classes in the proportions of the training split
    (:func:`~gendiff.runs.dataset_labels`) with guidance weight ``guidance`` (default: the
    recipe's), kept as seed-<seed>-w<w>.npz with the labels. Returns (images, model, checkpoint path)."""
    from ..runs import dataset_labels, generate, load_run

    if model is None:
        model, checkpoint = load_run(path, None)
    n = n or model.recipe.get("eval", {}).get("fid_samples", 50_000)
    guidance = model.conditioning.check_guidance(guidance)  # refuses guidance of an unconditional model
    name = f"seed-{seed}-w{guidance:g}" if model.conditioning.active else f"seed-{seed}"
    store = run_folder(checkpoint) / "eval" / "samples" / f"{name}.npz"
    if store.is_file():
        try:
            kept = np.load(store)
            if str(kept["checkpoint"]) == str(checkpoint.name) and len(kept["samples"]) >= n:
                return kept["samples"][:n], model, checkpoint
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a damaged cache: drawn again
            warnings.warn(f"the sample cache {store} is damaged ({type(exc).__name__}); the samples are drawn again",
                          stacklevel=2)
    labels = dataset_labels(model, n, seed)
    x = generate(model, n, seed=seed, batch_size=batch_size, console=console, progress=progress, precision=precision,
                 cond=labels, guidance=guidance)
    from ..images import to_uint8

    images = to_uint8(x, model.levels)
    from ..files import write_npz

    extra = {} if labels is None else {"labels": labels.numpy(), "guidance": guidance}
    write_npz(store, samples=images, checkpoint=str(checkpoint.name), levels=model.levels, **extra)
    return images, model, checkpoint


def eval_context(model, spec, run_dir: Path, checkpoint: Path, precision: str = "fp32", console=None,
                 progress: bool = True, final_samples: torch.Tensor | None = None, system=None):
    """The :class:`~gendiff.evaluation.metrics.EvalContext` of a run: samples drawn by
    :func:`run_samples` (kept in RUN/eval/samples/), references by :func:`reference_images`."""
    from .metrics import EvalContext

    def draw(n: int, seed: int) -> np.ndarray:
        return run_samples(run_dir, n, seed, 256, console, progress, precision, model=model, checkpoint=checkpoint)[0]

    return EvalContext(model, model.dataset, spec, Path(run_dir), Path(checkpoint), draw,
                       lambda ref: reference_images(ref, model, system), precision, console, progress, final_samples)


def space_dataset(features: str, system=None):
    """The registered dataset (default arguments, the space's image size) that a dataset-classifier
    feature space (``gendiff-<dataset>-<size>``) is trained on; None for other spaces."""
    from ..plugins import plugin_system
    from .classifier_features import parse_space

    space = parse_space(features)
    if space is None:
        return None
    return (system or plugin_system()).registry("dataset").get(space.dataset)(image_size=space.size)


def reference_images(ref: str, model=None, system=None) -> tuple[np.ndarray, str | None]:
    """``train``/``test`` (the run's own dataset), ``DATASET:SPLIT`` (a registered dataset with
    its default arguments), or a path (samples.npz or a folder of images). Returns the images
    and a cache key (None for paths)."""
    from ..plugins import plugin_system

    if ref in ("train", "test"):
        if model is None or getattr(model, "dataset", None) is None:
            raise GendiffError(f"--ref {ref} means the run's own dataset; for a sample folder name one, e.g. "
                               f"--ref digits:{ref} or --ref cifar10:{ref}, or give a folder of images")
        dataset, split = model.dataset, ref
    elif ":" in ref and not Path(ref).exists():
        name, _, split = ref.partition(":")
        registry = (system or plugin_system()).registry("dataset")
        if name not in registry or split not in ("train", "test"):
            raise GendiffError(f"unknown reference {ref!r}: use train, test, DATASET:SPLIT with a dataset from "
                               f"{', '.join(registry.names())} and split train or test, or a path")
        try:
            dataset = registry.get(name)()
        except (TypeError, ValueError) as exc:
            raise GendiffError(f"--ref {ref}: dataset '{name}' needs arguments ({exc}); give a folder of its images instead") from None
    elif Path(ref).exists():
        return load_images(Path(ref)), None
    else:
        raise GendiffError(f"unknown reference {ref!r}: use train, test, DATASET:SPLIT (e.g. cifar10:train) or "
                           f"an existing samples.npz / image folder")
    images = levels_to_pixels(dataset.load(split), dataset.levels)
    return images, f"gendiff-{dataset.name}-{split}"
