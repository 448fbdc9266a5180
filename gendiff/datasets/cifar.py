"""CIFAR-10 (Krizhevsky 2009), the paper's dataset: the official python archive, checked by MD5."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .base import Dataset, DatasetUnavailableError, data_root, download, md5sum


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
