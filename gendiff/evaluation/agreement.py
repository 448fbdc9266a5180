"""Class agreement of a conditional model's samples: how often the dataset's own classifier (the
network whose features are gendiff's FID space for that dataset: :mod:`.digits_features` for the
8x8 digits, :mod:`.classifier_features` for MNIST and Fashion-MNIST) assigns a sample to the class
it was asked for. The measure of Ho & Salimans' trade-off on the other axis from FID."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import GendiffError
from .digits_features import grey_unit


def dataset_classifier(dataset) -> torch.nn.Module:
    """The classifier of ``dataset``'s FID feature space (trained once and cached): a network
    taking grey images scaled to [0, 1], (N, 1, H, W), and giving K logits."""
    from .classifier_features import load_classifier, space_for

    name, side = getattr(dataset, "name", None), dataset.shape[1]
    if name == "digits":
        from .digits_features import load_digits_net

        return load_digits_net()[0]
    space = space_for(name, side)
    if space is None:
        raise GendiffError(f"gendiff has no classifier for dataset '{name}' at {side}x{side}: class agreement is "
                           f"measured for digits, mnist and fashion-mnist")
    return load_classifier(space, dataset)[0]


def predict_classes(images: np.ndarray, dataset, batch_size: int = 1000) -> np.ndarray:
    """The classifier's class for each uint8 image (N, H, W, C) on the 0..255 scale."""
    net = dataset_classifier(dataset)  # (trained here the first time: outside no_grad)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)
            out.append(net(grey_unit(x)).argmax(1))
    return torch.cat(out).numpy()


def class_agreement(images: np.ndarray, labels, dataset) -> dict[str, Any]:
    """The fraction of samples whose predicted class is the requested label (N,), overall and
    per class, with the worst class."""
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise GendiffError(f"{len(labels)} labels for {len(images)} images")
    hit = predict_classes(images, dataset) == labels
    per_class = {int(c): float(hit[labels == c].mean()) for c in np.unique(labels)}
    worst = min(per_class, key=per_class.get)
    names = getattr(dataset, "class_names", ()) or ()
    return {"agreement": float(hit.mean()), "per_class": per_class,
            "worst_class": names[worst] if worst < len(names) else str(worst),
            "worst_class_agreement": per_class[worst], "samples": int(len(labels))}
