"""Scoring 8x8 digit samples with a classifier trained on the real digits.

A support-vector classifier (scikit-learn's RBF SVC, probabilities calibrated by Platt scaling) is fitted on the
digits training split (features: grey levels / 16). For a set of samples it reports the mean
top-class probability (how confidently each sample reads as some digit), how many of the ten
classes occur, and how many samples are near-copies of a training image: a sample is a copy if
its mean absolute difference to the nearest training image is below a quarter of a grey level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

COPY_THRESHOLD = 0.25  #: mean |difference| in grey levels below which a sample counts as a copy
BAR = {"mean_top_class_probability": 0.85, "classes_present": 10, "copies": 0}


class DigitsClassifier:
    def __init__(self, dataset, seed: int = 0):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        self.levels = dataset.levels
        self.train = dataset.load("train").reshape(-1, 64).numpy().astype(np.float64)
        labels = dataset.labels("train").numpy()
        # an RBF support-vector classifier with calibrated (Platt) probabilities
        self.clf = CalibratedClassifierCV(SVC(random_state=seed), ensemble=False, method="sigmoid")
        self.clf.fit(self.train / (self.levels - 1), labels)
        test = dataset.load("test").reshape(-1, 64).numpy() / (self.levels - 1)
        self.test_accuracy = float((self.clf.predict(test) == dataset.labels("test").numpy()).mean())

    def report(self, samples_levels: torch.Tensor | np.ndarray) -> dict[str, Any]:
        """Scores for samples given as grey levels 0..K-1, shape (N, 1, 8, 8)."""
        x = np.asarray(samples_levels, dtype=np.float64).reshape(len(samples_levels), 64)
        proba = self.clf.predict_proba(x / (self.levels - 1))
        counts = np.bincount(proba.argmax(1), minlength=10)
        nearest = _nearest_l1(x, self.train) / 64
        train_nearest = _nearest_l1(self.train, self.train, exclude_self=True) / 64
        report = {
            "samples": int(len(x)),
            "mean_top_class_probability": float(proba.max(1).mean()),
            "classes_present": int((counts > 0).sum()),
            "class_counts": counts.tolist(),
            "copies": int((nearest < COPY_THRESHOLD).sum()),
            "nearest_train_distance_median": float(np.median(nearest)),
            "train_to_train_distance_median": float(np.median(train_nearest)),
            "classifier_test_accuracy": self.test_accuracy,
        }
        report["passes"] = bool(
            report["mean_top_class_probability"] >= BAR["mean_top_class_probability"]
            and report["classes_present"] == BAR["classes_present"]
            and report["copies"] == BAR["copies"]
        )
        return report


def _nearest_l1(a: np.ndarray, b: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """For each row of a, the L1 distance to its nearest row of b (in chunks)."""
    out = np.empty(len(a))
    for start in range(0, len(a), 256):
        d = np.abs(a[start:start + 256, None, :] - b[None, :, :]).sum(-1)
        if exclude_self:
            rows = np.arange(start, min(start + 256, len(a)))
            d[rows - start, rows] = np.inf
        out[start:start + 256] = d.min(1)
    return out
