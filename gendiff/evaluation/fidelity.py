"""FID, KID and Inception Score through torch-fidelity (no hand-written Frechet code).

- Images that look like CIFAR-10 or an image folder are compared in torch-fidelity's
  ``inception-v3-compat`` feature space. Its weights come from torch-fidelity's own download
  on first use (into the torch hub cache) or from ``inception_weights``; with neither, the
  error says where to get the file and where to put it.
- 8x8 single-channel digits are compared in the feature space of gendiff's digits classifier
  (:mod:`gendiff.evaluation.digits_features`), registered with torch-fidelity as the feature
  extractor ``gendiff-digits``; its logits give the Inception-Score-style classifier score.
- MNIST and Fashion-MNIST images (28x28 or padded to 32x32) are compared in the feature space of
  a classifier gendiff trains once on the dataset's training split
  (:mod:`gendiff.evaluation.classifier_features`), e.g. ``gendiff-fashion-mnist-32``.

Reference statistics are cached by torch-fidelity under ``$GENDIFF_CACHE/fidelity``.
Images enter as uint8 arrays (N, H, W, C) on the 0..255 scale, as ``samples.npz`` stores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GendiffError
from .classifier_features import classifier_extractor_class, load_classifier, parse_space, space_for
from .digits_features import digits_feature_extractor_class, load_digits_net, usable_cache_dir

INCEPTION = "inception-v3-compat"
DIGITS = "gendiff-digits"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


class EvaluationError(GendiffError):
    """An evaluation cannot be run as asked (the message says why and what to do)."""


class ImageArray(torch.utils.data.Dataset):
    """uint8 images (N, H, W, C) as torch-fidelity wants them: uint8 tensors (C', H, W), with
    grey images repeated to 3 channels when ``rgb``."""

    def __init__(self, images: np.ndarray, rgb: bool):
        self.images, self.rgb = images, rgb

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return x.expand(3, -1, -1).contiguous() if self.rgb and x.shape[0] == 1 else x


#: what a user types to get torch-fidelity (and torchvision, which it needs)
EVAL_EXTRA = "pip install 'gendiff[eval]'"


def fidelity_missing() -> str | None:
    """Why torch-fidelity cannot be used here (None when it can): it is an optional part of gendiff,
    needed only for FID / KID / IS (the extra ``gendiff[eval]``)."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as exc:
        return (f"FID, KID and the Inception Score need torch-fidelity, which is not installed here ({exc}). "
                f"Install gendiff's evaluation extra: {EVAL_EXTRA}")
    return None


def require_fidelity() -> None:
    """Raise an :class:`EvaluationError` naming the extra when torch-fidelity is missing."""
    problem = fidelity_missing()
    if problem:
        raise EvaluationError(problem)


def inception_url() -> str:
    require_fidelity()
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def inception_weights(path: str | Path | None) -> str:
    """A local file with torch-fidelity's Inception-v3 weights: ``path``, else the torch hub
    cache, downloaded there by torch-fidelity's address on first use."""
    if path is not None:
        if not Path(path).is_file():
            raise EvaluationError(f"--inception-weights {path}: no such file.")
        return str(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if cached.is_file():
        return str(cached)
    url = inception_url()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=True)
    except Exception as exc:  # noqa: BLE001 - any failure to fetch means: tell the user where to put it
        for leftover in cached.parent.glob(INCEPTION_FILE + "*"):
            if leftover != cached:
                leftover.unlink(missing_ok=True)
        raise EvaluationError(
            f"the Inception-v3 weights that FID needs are not available and could not be downloaded "
            f"({type(exc).__name__}: {exc}). On a machine with internet, download {url} and either "
            f"put it at {cached} or pass --inception-weights PATH."
        ) from None
    return str(cached)


def choose_features(images: np.ndarray, dataset: str | None = None) -> str:
    """The feature space for images (uint8 N x H x W x C) of the named dataset: its own
    classifier where gendiff has one (MNIST, Fashion-MNIST), the digits classifier for 8x8 grey
    images, Inception-v3 for everything else."""
    space = space_for(dataset, images.shape[1]) if images.shape[3] == 1 and images.shape[1] == images.shape[2] else None
    if space is not None:
        return space.name
    return DIGITS if images.shape[1:] == (8, 8, 1) else INCEPTION


def fidelity(samples: np.ndarray, reference: np.ndarray, reference_key: str | None, features: str,
             inception_weights_path: str | Path | None = None, isc: bool = True, dataset=None,
             device: torch.device | str | None = None, progress: bool = False) -> dict[str, Any]:
    """FID and KID between ``samples`` and ``reference`` (uint8 N x H x W x C) and, when
    ``isc``, the Inception Score of the samples, in the ``features`` space. A dataset classifier's
    space is trained on ``dataset`` (default: the registered dataset) the first time it is used.
    The features are computed on CUDA when ``device`` is a CUDA device (default: when available);
    ``progress`` shows torch-fidelity's own progress bars on stderr."""
    require_fidelity()
    import torch_fidelity

    if samples.shape[1:] != reference.shape[1:]:
        raise EvaluationError(
            f"the samples are {_shape(samples)} but the reference images are {_shape(reference)}: sizes and channels must match."
        )
    if len(samples) < 2 or len(reference) < 2:
        raise EvaluationError("FID needs at least 2 samples and 2 reference images.")
    kwargs: dict[str, Any] = {}
    if features == DIGITS:
        _, weights, _ = load_digits_net()
        if DIGITS not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(DIGITS, digits_feature_extractor_class())
        kwargs["feature_extractor_weights_path"] = str(weights)
    elif features == INCEPTION:
        kwargs["feature_extractor_weights_path"] = inception_weights(inception_weights_path)
    elif parse_space(features) is not None:
        space = parse_space(features)
        if samples.shape[1:] != (space.size, space.size, 1):
            raise EvaluationError(f"the {features} features take {space.size}x{space.size} grey images, not "
                                  f"{_shape(samples)}")
        _, weights, _ = load_classifier(space, dataset)
        if features not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(features, classifier_extractor_class())
        kwargs["feature_extractor_weights_path"] = str(weights)
    else:
        raise EvaluationError(f"unknown feature space {features!r}; use {DIGITS!r}, {INCEPTION!r}, "
                              f"gendiff-mnist-28|32 or gendiff-fashion-mnist-28|32")
    rgb = features == INCEPTION
    cache = usable_cache_dir("fidelity")
    metrics = torch_fidelity.calculate_metrics(
        input1=ImageArray(samples, rgb),
        input2=ImageArray(reference, rgb),
        cuda=torch.cuda.is_available() if device is None else torch.device(device).type == "cuda",
        fid=True,
        kid=True,
        isc=isc and len(samples) >= 10,
        feature_extractor=features,
        kid_subset_size=min(1000, len(samples), len(reference)),
        cache=reference_key is not None,
        cache_root=str(cache),
        input2_cache_name=None if reference_key is None else f"{reference_key}-{features}-{len(reference)}",
        verbose=progress,
        save_cpu_ram=True,  # in-memory arrays: no DataLoader worker processes
        **kwargs,
    )
    out = {
        "fid": float(metrics["frechet_inception_distance"]),
        "kid_mean": float(metrics["kernel_inception_distance_mean"]),
        "kid_std": float(metrics["kernel_inception_distance_std"]),
        "features": features,
        "samples": int(len(samples)),
        "reference_images": int(len(reference)),
    }
    if "inception_score_mean" in metrics:
        out["inception_score_mean"] = float(metrics["inception_score_mean"])
        out["inception_score_std"] = float(metrics["inception_score_std"])
    return out


def _shape(images: np.ndarray) -> str:
    return "x".join(str(s) for s in images.shape[1:])
