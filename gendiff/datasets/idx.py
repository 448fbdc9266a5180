"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 60,000 training and
10,000 test 28x28 grey images with ten labelled classes, in the IDX format, K = 256.

Where the four files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; gzipped or not) are looked for, in order:

1. ``root`` (default: ``$GENDIFF_DATA/<name>`` or ``~/.cache/gendiff/data/<name>``);
2. the system folder a Debian package installs (Fashion-MNIST:
   ``apt-get install dataset-fashion-mnist`` puts the files in ``/usr/share/datasets/fashion-mnist``);
3. otherwise they are downloaded into ``root`` from the official addresses, with a progress bar,
   through a temporary file (``download = true``).

Every file is checked before use against the official MD5 of its *uncompressed* content, so the
official archives, Debian's recompressed copies and unpacked files are all recognised and anything
else is refused. The IDX headers are checked too (magic number, dimensions, counts that agree,
no truncation). ``image_size = 32`` pads each image with zeros to 32x32, so the paper's 32x32
U-Net applies unchanged.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .base import Dataset, DatasetUnavailableError, data_root, download

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 and 1 dimensions
#: the uncompressed size of each official file (MNIST's and Fashion-MNIST's are the same): nothing
#: larger is read or decompressed, so a gzip bomb or a huge file in its place costs no memory
RAW_SIZE = {"train-images-idx3-ubyte": 16 + 60_000 * 28 * 28, "train-labels-idx1-ubyte": 8 + 60_000,
            "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28, "t10k-labels-idx1-ubyte": 8 + 10_000}


class IDXError(DatasetUnavailableError):
    """An IDX file that is not what it claims to be (the message says what is wrong)."""


def parse_idx(data: bytes, what: str, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file's bytes: a big-endian magic number (0x0803 for images
    (N, rows, cols), 0x0801 for labels (N,)), the dimensions, then the data, exactly."""
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise IDXError(f"{what} is too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IDXError(f"{what} has the magic number 0x{found:08x}, not 0x{magic:08x}: it is not an IDX "
                       f"{'image' if ndim == 3 else 'label'} file")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim:]
    expected = int(np.prod(dims))
    if len(body) != expected:
        state = "truncated" if len(body) < expected else "longer than its header says"
        raise IDXError(f"{what} is {state}: its header promises {' x '.join(map(str, dims))} = {expected:,} bytes "
                       f"of data, it holds {len(body):,}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def gunzip(raw: bytes, limit: int, path: Path, name: str) -> bytes:
    """The content of a gzip file, decompressed to at most ``limit`` bytes: more is refused
    without being produced (a gzip bomb), and so is a stream that ends early (truncated)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = inflater.decompress(raw, limit + 1)
    if len(data) > limit:
        raise IDXError(f"{path} decompresses to more than the official {name}'s {limit:,} bytes: it is not that file "
                       f"(or a gzip bomb); nothing more of it was decompressed")
    if not inflater.eof:
        raise IDXError(f"{path} cannot be read as a (gzipped) IDX file: the compressed stream is truncated")
    return data


class IDXDataset(Dataset):
    """A dataset of IDX files (MNIST's format): see the module docstring."""

    levels = 256
    num_classes = 10
    #: the folder name under gendiff's data folder and in messages
    folder: ClassVar[str]
    #: official download addresses, tried in order (each followed by the file name)
    mirrors: ClassVar[tuple[str, ...]]
    #: MD5 of each file's uncompressed content (the official release)
    raw_md5: ClassVar[dict[str, str]]
    #: folders a system package installs the files into
    system_dirs: ClassVar[tuple[str, ...]] = ()
    #: how to get the files without gendiff's download
    how_to_install: ClassVar[str] = ""

    def __init__(self, root: str = "", image_size: int = 28, download: bool = True):
        if not isinstance(root, str):
            raise ValueError(f"root must be a folder path (a string), got {root!r}")
        if isinstance(image_size, bool) or image_size not in (28, 32):
            raise ValueError(f"image_size must be 28 (the data's own) or 32 (zero-padded for the paper's 32x32 "
                             f"architecture), got {image_size!r}")
        if not isinstance(download, bool):
            raise ValueError(f"download must be true or false, got {download!r}")
        self.root = Path(root).expanduser() if root else data_root() / self.folder
        self.image_size, self.download = image_size, download
        self.shape = (1, image_size, image_size)
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}

    # -- finding, fetching and checking the files -------------------------------------------------
    def locate(self, name: str) -> Path | None:
        """The file ``name`` (gzipped or not) in ``root`` or a system folder, if there is one."""
        for folder in (self.root, *map(Path, self.system_dirs)):
            for candidate in (folder / f"{name}.gz", folder / name):
                if candidate.is_file():
                    return candidate
        return None

    def fetch(self, name: str) -> Path:
        """Download ``name``.gz into ``root`` from the first mirror that answers; the file is
        checked before it is kept (a wrong checksum deletes the download and is an error)."""
        dest = self.root / f"{name}.gz"
        errors = []
        for mirror in self.mirrors:
            try:
                download(mirror + f"{name}.gz", dest, f"{self.name}: {name}")
            except (OSError, ValueError) as exc:  # URLError is an OSError
                errors.append(f"{mirror}: {exc}")
                continue
            try:
                self.read(dest, name)
            except DatasetUnavailableError:
                dest.unlink(missing_ok=True)
                raise
            return dest
        raise DatasetUnavailableError(self._where(name, "the download failed (" + "; ".join(errors) + ")"))

    def read(self, path: Path, name: str) -> bytes:
        """The uncompressed bytes of ``path``, checked against the official MD5 of ``name``."""
        limit = RAW_SIZE[name]
        try:
            if path.stat().st_size > limit:
                raise IDXError(f"{path} is {path.stat().st_size:,} bytes, larger than the official {name} "
                               f"({limit:,} bytes uncompressed): it is not {self.name}'s file")
            raw = path.read_bytes()
            data = gunzip(raw, limit, path, name) if raw[:2] == b"\x1f\x8b" else raw
        except (OSError, zlib.error) as exc:
            raise IDXError(f"{path} cannot be read as a (gzipped) IDX file: {exc}") from None
        actual = hashlib.md5(data).hexdigest()
        if actual != self.raw_md5[name]:
            raise DatasetUnavailableError(
                f"{path} holds content with MD5 {actual}, not the official {self.raw_md5[name]} of {name}: the file "
                f"is damaged or not {self.name}'s. Delete it and run again to download it afresh, or replace it "
                f"with the official file ({self.mirrors[0]}{name}.gz)."
            )
        return data

    def _where(self, name: str, why: str) -> str:
        get = f" {self.how_to_install}" if self.how_to_install else ""
        return (f"{self.name} is not available: {name} {why}.{get} Or download the four files from "
                f"{self.mirrors[0]} on a machine with internet and put them in {self.root} (or set [data] root, or "
                f"GENDIFF_DATA, to the folder that holds a '{self.folder}' folder).")

    def _file(self, name: str) -> bytes:
        path = self.locate(name)
        if path is None:
            if not self.download:
                raise DatasetUnavailableError(self._where(name, "is not there and download = false"))
            path = self.fetch(name)
        return self.read(path, name)

    # -- the Dataset interface ---------------------------------------------------------------------
    def _split(self, split: str) -> tuple[Tensor, Tensor]:
        self.check_split(split)
        if split not in self._cache:
            image_name, label_name = FILES[split]
            images = parse_idx(self._file(image_name), image_name, IMAGE_MAGIC)
            labels = parse_idx(self._file(label_name), label_name, LABEL_MAGIC)
            if len(images) != len(labels):
                raise IDXError(f"{self.name} {split}: {len(images):,} images but {len(labels):,} labels")
            if images.shape[1:] != (28, 28):
                raise IDXError(f"{self.name} {split}: images of {images.shape[1]}x{images.shape[2]}, not 28x28")
            if len(labels) and int(labels.max()) >= self.num_classes:
                raise IDXError(f"{self.name} {split}: a label {int(labels.max())} outside 0..{self.num_classes - 1}")
            x = torch.from_numpy(images.copy())[:, None]
            pad = (self.image_size - 28) // 2
            if pad:
                x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            self._cache[split] = (x, torch.from_numpy(labels.astype(np.int64)))
        return self._cache[split]

    def load(self, split: str = "train") -> Tensor:
        return self._split(split)[0]

    def labels(self, split: str = "train") -> Tensor:
        return self._split(split)[1]


class FashionMNIST(IDXDataset):
    """Fashion-MNIST (Xiao et al. 2017): Zalando's article images, 10 classes (see the module docstring)."""

    name = "fashion-mnist"
    folder = "fashion-mnist"
    class_names = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot")
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
               "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
    raw_md5 = {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    }
    system_dirs = ("/usr/share/datasets/fashion-mnist",)
    how_to_install = ("On Debian or Ubuntu: apt-get install dataset-fashion-mnist (the files go to "
                      "/usr/share/datasets/fashion-mnist, where gendiff finds them).")


class MNIST(IDXDataset):
    """MNIST (LeCun et al. 1998): handwritten digits, 10 classes (see the module docstring)."""

    name = "mnist"
    folder = "mnist"
    class_names = tuple(str(d) for d in range(10))
    mirrors = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
    raw_md5 = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    system_dirs = ("/usr/share/datasets/mnist",)
