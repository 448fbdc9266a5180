"""Any folder of PNG/JPEG images."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .base import Dataset, DatasetUnavailableError, Source


class ImageFolder(Dataset):
    """Every PNG/JPEG image under ``path`` (recursively), centre-cropped to a square, resized to
    ``image_size`` and converted to grey (``channels = 1``) or RGB (``channels = 3``); K = 256.
    Files that cannot be read are skipped and counted in one warning. ``test_fraction`` of the
    images (a fixed seeded choice) form the test split."""

    name = "image-folder"
    levels = 256
    suffixes: ClassVar[tuple[str, ...]] = (".png", ".jpg", ".jpeg")

    def __init__(self, path: str = "", image_size: int = 32, channels: int = 3, test_fraction: float = 0.0, seed: int = 0):
        if not isinstance(path, str) or not path:
            raise ValueError("path must name the folder of images")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction!r}")
        self.path, self.image_size, self.channels = Path(path).expanduser(), image_size, channels
        self.test_fraction, self.seed = float(test_fraction), seed
        self.shape = (channels, image_size, image_size)

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            raise DatasetUnavailableError(f"image folder {self.path} does not exist or is not a folder")
        return sorted(p for p in self.path.rglob("*") if p.suffix.lower() in self.suffixes and p.is_file())

    def split_files(self, split: str) -> list[Path]:
        """The files of a split: the readable images (their headers parse; the others are skipped
        and counted in one warning), a fixed seeded ``test_fraction`` of them for test."""
        from PIL import Image

        self.check_split(split)
        readable, bad = [], []
        for file in self.files():
            try:
                with Image.open(file):
                    readable.append(file)
            except Exception:  # noqa: BLE001 - any unreadable file is skipped and counted
                bad.append(file.name)
        if bad:
            warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {self.path}: {', '.join(bad[:5])}"
                          + (" ..." if len(bad) > 5 else ""), stacklevel=3)
        if not readable:
            raise DatasetUnavailableError(f"no readable PNG or JPEG images in {self.path}")
        n_test = int(round(len(readable) * self.test_fraction))
        order = np.random.default_rng(self.seed).permutation(len(readable))
        idx = np.sort(order[:n_test] if split == "test" else order[n_test:])
        if len(idx) == 0:
            raise DatasetUnavailableError(f"the {split} split of {self.path} is empty (test_fraction = {self.test_fraction})")
        return [readable[i] for i in idx]

    def open(self, split: str = "train") -> "FileSource":
        """The split read from disk batch by batch (nothing is decoded until it is asked for)."""
        return FileSource(self.split_files(split), self.image_size, self.channels)

    def load(self, split: str = "train") -> Tensor:
        """Every image of the split, decoded into memory (evaluations; training streams it)."""
        source = self.open(split)
        return source[torch.arange(len(source))][0]


class FileSource(Source):
    """Image files decoded on demand: centre-cropped to a square, resized (bicubic) to
    ``image_size``, grey or RGB; uint8 (C, H, W) each. Picklable, for DataLoader workers."""

    def __init__(self, files: list[Path], image_size: int, channels: int):
        self.files, self.image_size, self.channels = files, image_size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, indices):
        return torch.from_numpy(np.stack([self.decode(self.files[i]) for i in indices.tolist()])), None

    def decode(self, file: Path) -> np.ndarray:
        from PIL import Image

        from ..images import eight_bit

        try:
            with Image.open(file) as img:
                img = eight_bit(img).convert("L" if self.channels == 1 else "RGB")
                w, h = img.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                img = img.crop((left, top, left + side, top + side))
                img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
                arr = np.asarray(img, dtype=np.uint8).reshape(self.image_size, self.image_size, self.channels)
        except Exception as exc:  # noqa: BLE001 - a file that changed or broke after the run started
            raise DatasetUnavailableError(f"cannot decode the image {file}: {exc}") from None
        return arr.transpose(2, 0, 1)
