"""scikit-learn's 8x8 handwritten digits (offline)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from .base import Dataset


class Digits(Dataset):
    """The 8x8 handwritten digits that ship inside scikit-learn (1797 images, grey levels 0..16,
    so K = 17), split once with a fixed seed: ``test_size`` images for test, the rest for train.
    Works offline."""

    name = "digits"
    shape = (1, 8, 8)
    levels = 17
    num_classes = 10
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, test_size: int = 297, seed: int = 0):
        if isinstance(test_size, bool) or not isinstance(test_size, int) or not 0 < test_size < 1797:
            raise ValueError(f"test_size must be an integer in 1..1796, got {test_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.test_size, self.seed = test_size, seed

    def _split(self, split: str) -> np.ndarray:
        """Sorted indices of ``split`` in scikit-learn's order (a fixed seeded permutation)."""
        self.check_split(split)
        order = np.random.default_rng(self.seed).permutation(1797)
        return np.sort(order[: self.test_size] if split == "test" else order[self.test_size :])

    def load(self, split: str = "train") -> Tensor:
        images = _sklearn_digits()[0]  # (1797, 8, 8), values 0..16
        return torch.from_numpy(images[self._split(split)])[:, None]

    def labels(self, split: str = "train") -> Tensor:
        """The digit classes (0..9) of :meth:`load`'s images, in the same order."""
        return torch.from_numpy(_sklearn_digits()[1][self._split(split)])


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (uint8 images (1797, 8, 8), int64 labels), parsed once."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)
    images.setflags(write=False)
    return images, bunch.target.astype(np.int64)
