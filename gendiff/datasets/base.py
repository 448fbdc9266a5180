"""Datasets: discrete images with a known number of levels K (the interface and the shared
download helpers; the built-ins are the sibling modules).

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

import hashlib
import os
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from torch import Tensor

from ..component import Component
from ..errors import GendiffError

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

    def open(self, split: str = "train") -> "Source":
        """The split as a :class:`Source`, which training reads batch by batch (possibly in
        DataLoader worker processes). By default :meth:`load`'s tensor, in memory; a dataset too
        large for memory returns a source that reads its examples from disk when asked."""
        return TensorSource(self.load(split), self.labels(split) if self.num_classes else None)


class Source:
    """A split read batch by batch: ``len(source)`` examples; ``source[indices]`` (a LongTensor of
    example numbers) gives (uint8 images (B, C, H, W), int64 labels (B,) or None). It is used as a
    map-style dataset of batches by :class:`torch.utils.data.DataLoader`, so it must be picklable."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, indices: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


class TensorSource(Source):
    """A split held in memory."""

    def __init__(self, data: Tensor, labels: Tensor | None = None):
        if labels is not None and len(labels) != len(data):
            raise DatasetUnavailableError(f"{len(data)} images but {len(labels)} labels")
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, indices):
        return self.data[indices], None if self.labels is None else self.labels[indices]


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
