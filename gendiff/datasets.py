"""Datasets: discrete images with a known number of levels K.

Built-ins: ``digits`` (scikit-learn's 8x8 digits, K = 17, offline), ``cifar10`` (the official
python archive, downloaded once and checked by MD5 before anything is unpickled) and
``image-folder`` (any folder of PNG/JPEG images, centre-cropped and resized).

Interface: :class:`Dataset`. A dataset states its ``shape`` (C, H, W) and ``levels`` (K) without
loading anything (so a model can be built from a recipe offline), and ``load(split)`` returns
the integer images, uint8 in {0..K-1}, shaped (N, C, H, W). The composed model maps level k to
the paper's scale x = 2k/(K-1) - 1 (:func:`gendiff.distributions.levels_to_unit`).

Labels (for class-conditional recipes): a dataset with classes declares ``num_classes`` (and,
optionally, ``class_names``) and gives ``labels(split)``, an int64 tensor (N,) in
{0..num_classes-1} in the order of ``load(split)``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tarfile
import urllib.request
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .component import Component
from .errors import GendiffError

SPLITS = ("train", "test")


class Dataset(Component, ABC):
    """A source of discrete images. Subclasses set ``shape`` and ``levels`` (or compute them in
    ``__init__`` from their arguments) and implement :meth:`load`."""

    family: ClassVar[str] = "dataset"
    shape: tuple[int, int, int]
    levels: int
    #: the number of classes its labels take (0: no labels)
    num_classes: int = 0
    #: a name per class, if the classes have names
    class_names: tuple[str, ...] = ()

    @abstractmethod
    def load(self, split: str = "train") -> Tensor:
        """uint8 tensor (N, C, H, W) with values in {0..levels-1}; ``split`` is "train" or "test"."""

    def labels(self, split: str = "train") -> Tensor:
        """int64 tensor (N,) of class labels in {0..num_classes-1}, in the order of :meth:`load`."""
        raise DatasetUnavailableError(f"dataset '{self.name}' has no class labels (num_classes = 0)")

    @staticmethod
    def check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


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


class DatasetUnavailableError(GendiffError):
    """A dataset's files are missing and cannot be fetched; the message says where to put them."""


def data_root(root: str = "") -> Path:
    """The folder datasets are kept in: ``root`` if given, else ``$GENDIFF_DATA``, else
    ``~/.cache/gendiff/data``."""
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("GENDIFF_DATA") or Path.home() / ".cache" / "gendiff" / "data")


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, description: str) -> None:
    """Fetch ``url`` into ``dest`` with a rich progress bar, through a temporary file renamed into
    place only when complete (an interrupted download leaves nothing behind)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn, TimeRemainingColumn

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task(description, total=total)
                while block := response.read(1 << 16):
                    out.write(block)
                    progress.update(task, advance=len(block))
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


class CIFAR10(Dataset):
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test images, 3x32x32, K = 256.

    Uses ``cifar-10-python.tar.gz`` under ``root`` (default: :func:`data_root`), downloading it
    from the official address if absent. The archive's MD5 is checked before anything is
    unpickled; a wrong checksum is an error, never a silent re-download."""

    name = "cifar10"
    shape = (3, 32, 32)
    levels = 256
    num_classes = 10
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    url: ClassVar[str] = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5: ClassVar[str] = "c58f30108f718f92721af3b95e74349a"
    archive: ClassVar[str] = "cifar-10-python.tar.gz"

    def __init__(self, root: str = "", download: bool = True):
        if not isinstance(root, str):
            raise ValueError(f"root must be a folder path (a string), got {root!r}")
        if not isinstance(download, bool):
            raise ValueError(f"download must be true or false, got {download!r}")
        self.root, self.download = data_root(root), download

    def archive_path(self) -> Path:
        """The checked archive, downloading it first if allowed and needed."""
        path = self.root / self.archive
        if not path.is_file():
            if not self.download:
                raise DatasetUnavailableError(self._where(path, "it is not there and download = false"))
            try:
                download(self.url, path, "CIFAR-10")
            except (OSError, ValueError) as exc:  # URLError is an OSError
                raise DatasetUnavailableError(self._where(path, f"the download failed ({exc})")) from None
        actual = md5sum(path)
        if actual != self.md5:
            raise DatasetUnavailableError(
                f"{path} has MD5 {actual}, not the official {self.md5}: the file is damaged or not the "
                f"CIFAR-10 python archive. Delete it and run again to download it afresh, or replace it "
                f"with the file from {self.url}."
            )
        return path

    def _where(self, path: Path, why: str) -> str:
        return (
            f"CIFAR-10 is not available: {why}. Download {self.url} on a machine with internet and put "
            f"the file at {path} (or set [data] root, or GENDIFF_DATA, to the folder that holds it)."
        )

    def load(self, split: str = "train") -> Tensor:
        return self._read(split)[0]

    def labels(self, split: str = "train") -> Tensor:
        return self._read(split)[1]

    def _read(self, split: str) -> tuple[Tensor, Tensor]:
        """(images (N, 3, 32, 32) uint8, labels (N,) int64) of a split, read from the checked archive."""
        self.check_split(split)
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        arrays, labels = [], []
        with tarfile.open(self.archive_path(), "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in names:
                if name not in members:
                    raise DatasetUnavailableError(f"the CIFAR-10 archive has no {name}")
                batch = pickle.load(tar.extractfile(members[name]), encoding="bytes")  # checked by MD5
                arrays.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(arrays)), torch.from_numpy(np.concatenate(labels))


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

    def load(self, split: str = "train") -> Tensor:
        from PIL import Image

        self.check_split(split)
        images, bad = [], []
        for file in self.files():
            try:
                with Image.open(file) as img:
                    img = img.convert("L" if self.channels == 1 else "RGB")
                    w, h = img.size
                    side = min(w, h)
                    left, top = (w - side) // 2, (h - side) // 2
                    img = img.crop((left, top, left + side, top + side))
                    img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
                    arr = np.asarray(img, dtype=np.uint8).reshape(self.image_size, self.image_size, self.channels)
            except Exception:  # noqa: BLE001 - any unreadable file is skipped and counted
                bad.append(file.name)
                continue
            images.append(arr.transpose(2, 0, 1))
        if bad:
            warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {self.path}: {', '.join(bad[:5])}"
                          + (" ..." if len(bad) > 5 else ""), stacklevel=2)
        if not images:
            raise DatasetUnavailableError(f"no readable PNG or JPEG images in {self.path}")
        data = np.stack(images)
        n_test = int(round(len(data) * self.test_fraction))
        order = np.random.default_rng(self.seed).permutation(len(data))
        idx = np.sort(order[:n_test] if split == "test" else order[n_test:])
        if len(idx) == 0:
            raise DatasetUnavailableError(f"the {split} split of {self.path} is empty (test_fraction = {self.test_fraction})")
        return torch.from_numpy(data[idx])
