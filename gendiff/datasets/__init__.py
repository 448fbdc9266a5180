"""Datasets: discrete images with a known number of levels K (the interface: :mod:`.base`).

Built-ins: ``digits`` (scikit-learn's 8x8 digits, K = 17, offline), ``mnist`` and
``fashion-mnist`` (the official IDX files, 28x28 or padded to 32x32, K = 256; Fashion-MNIST also
from Debian's ``dataset-fashion-mnist``), ``cifar10`` (the official python archive, downloaded
once and checked by MD5 before anything is unpickled) and ``image-folder`` (any folder of
PNG/JPEG images, centre-cropped and resized). All but image-folder have ten labelled classes.
"""

from .base import SPLITS, Dataset, DatasetUnavailableError, Source, TensorSource, data_root, download, md5sum
from .cifar import CIFAR10
from .digits import Digits
from .idx import MNIST, FashionMNIST, IDXDataset, IDXError, parse_idx
from .image_folder import FileSource, ImageFolder

__all__ = [
    "CIFAR10", "Dataset", "DatasetUnavailableError", "Digits", "FashionMNIST", "FileSource", "IDXDataset", "IDXError",
    "ImageFolder",
    "MNIST", "SPLITS", "Source", "TensorSource", "data_root", "download", "md5sum", "parse_idx",
]
