"""Any folder of PNG/JPEG images."""

from __future__ import annotations

import os
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
    Transparent pixels (RGBA, palettes with a transparent entry) are composited onto white; 16-bit
    grey is scaled to 8 bits. Files that are not whole pictures (unreadable, non-image, zero-byte,
    truncated or damaged), pictures above :data:`~gendiff.images.MAX_PIXELS` (decompression bombs)
    and links that lead nowhere or loop are skipped and counted in one warning; linked folders are
    followed, each folder read once. At least 2 usable pictures are needed. ``test_fraction`` of
    the images (a fixed seeded choice) form the test split."""

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
        self._usable: list[Path] | None = None

    def files(self) -> tuple[list[Path], list[str]]:
        """Every file under ``path`` with a PNG/JPEG suffix, in a fixed order, and the links that
        lead nowhere (broken, or a loop of symbolic links). Linked folders are followed; a folder
        reached twice (a link loop) is read once."""
        if not self.path.is_dir():
            raise DatasetUnavailableError(f"image folder {self.path} does not exist or is not a folder")
        found, dead, seen, stack = [], [], set(), [self.path]
        while stack:
            folder = stack.pop()
            try:
                info = folder.stat()
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                dead.append(str(folder.relative_to(self.path)))
                continue
            for entry in reversed(entries):
                path = Path(entry.path)
                if entry.is_symlink() and not path.exists():  # broken, or a loop (ELOOP)
                    dead.append(str(path.relative_to(self.path)))
                elif entry.is_dir():
                    stack.append(path)
                elif entry.name.lower().endswith(self.suffixes) and entry.is_file():
                    found.append(path)
        return sorted(found), sorted(dead)

    def split_files(self, split: str) -> list[Path]:
        """The files of a split: the whole, readable pictures of at most MAX_PIXELS pixels
        (:func:`~gendiff.images.check_picture`; the others are skipped and counted in one
        warning), a fixed seeded ``test_fraction`` of them for test. A folder with fewer than
        two usable pictures is refused."""
        from ..images import PictureError, check_picture

        self.check_split(split)
        if self._usable is None:
            files, dead = self.files()
            usable, skipped = [], {"links leading nowhere or in a loop": dead} if dead else {}
            for file in files:
                try:
                    check_picture(file)
                    usable.append(file)
                except PictureError as exc:
                    skipped.setdefault(exc.kind, []).append(str(file.relative_to(self.path)))
            if skipped:
                count = sum(map(len, skipped.values()))
                why = "; ".join(f"{len(names)} {kind} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
                                for kind, names in skipped.items())
                warnings.warn(f"skipped {count} file(s) in {self.path}: {why}", stacklevel=3)
            if len(usable) < 2:
                raise DatasetUnavailableError(
                    f"the image folder {self.path} holds {len(usable)} usable PNG or JPEG picture(s)"
                    + (f" ({sum(map(len, skipped.values()))} skipped, see the warning)" if skipped else "")
                    + ": a dataset needs at least 2 (and at least train.batch_size for training)")
            self._usable = usable
        readable = self._usable
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

        from ..images import PictureError, read_picture

        try:
            img = read_picture(file, "L" if self.channels == 1 else "RGB")
        except PictureError as exc:  # a file that changed or broke after the run started
            raise DatasetUnavailableError(f"cannot decode the image {file}: {exc}") from None
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.uint8).reshape(self.image_size, self.image_size, self.channels).transpose(2, 0, 1)
