"""Classifiers of a dataset's own images as FID feature spaces (for MNIST and Fashion-MNIST, as
:mod:`gendiff.evaluation.digits_features` is for the 8x8 digits): Inception-v3 features of 28x28
grey images upsampled to 299x299 are not what these benchmarks' images are about, and the
Inception weights cannot be fetched offline.

A small convolutional network (three 3x3 convolutions of 16, 32, 64 channels, two max-pools, a
dense layer of 128 units, ten logits) is trained once, with a fixed seed, on the dataset's
training split (images as stored, grey levels / 255), and cached in gendiff's cache folder
(``$GENDIFF_CACHE`` or ``~/.cache/gendiff``) as ``classifier-<dataset>-<size>-v1.safetensors`` with
a JSON record of its architecture and test accuracy. It is registered with torch-fidelity as the
feature extractor ``gendiff-<dataset>-<size>`` (e.g. ``gendiff-fashion-mnist-32``). Features: the
128-dimensional penultimate layer scaled to unit root-mean-square on the training images (so
KID's polynomial kernel sees values of order 1), and the logits (the classifier score).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GendiffError
from .digits_features import cached_classifier, fidelity_extractor_class

VERSION = 1
PREFIX = "gendiff-"


@dataclass(frozen=True)
class Space:
    """A classifier feature space: a registered dataset, its image side, the accuracy it must reach."""

    dataset: str
    size: int
    min_accuracy: float = 0.85
    epochs: int = 4

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.dataset}-{self.size}"

    @property
    def stem(self) -> str:
        return f"classifier-{self.dataset}-{self.size}-v{VERSION}"


#: the datasets with a classifier feature space, and what their classifier must reach on test
MIN_ACCURACY = {"mnist": 0.98, "fashion-mnist": 0.88}


def space_for(dataset_name: str | None, size: int) -> Space | None:
    """The feature space of a dataset's images of this side, if it has one."""
    if dataset_name in MIN_ACCURACY and size in (28, 32):
        return Space(dataset_name, size, MIN_ACCURACY[dataset_name])
    return None


def parse_space(name: str) -> Space | None:
    """The :class:`Space` a feature-extractor name ``gendiff-<dataset>-<size>`` stands for."""
    if not name.startswith(PREFIX):
        return None
    dataset, _, size = name[len(PREFIX):].rpartition("-")
    return space_for(dataset, int(size)) if size.isdigit() else None


class ClassifierNet(nn.Module):
    """conv 3x3 (16) - conv 3x3 (32) - pool - conv 3x3 (64) - pool - dense 128 - dense 10, on grey
    levels scaled to [0, 1], for square images of side ``size`` (divisible by 4)."""

    def __init__(self, size: int, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (size // 4) ** 2, 128)
        self.fc2 = nn.Linear(128, classes)
        self.register_buffer("feature_scale", torch.ones(()))  #: 1 / RMS of the training features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def train_classifier(dataset, space: Space, seed: int = 0, batch: int = 128) -> tuple[ClassifierNet, float]:
    """Train on ``dataset``'s training split with a fixed seed (Adam, random shifts of one pixel);
    return the network (its feature scale set) and its test accuracy."""
    x = dataset.load("train").float() / 255.0
    y = dataset.labels("train")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ClassifierNet(space.size)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = space.epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    for _ in range(space.epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()
            loss = F.cross_entropy(net(torch.roll(x[idx], shifts=shift, dims=(2, 3))), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        xt, yt = dataset.load("test").float() / 255.0, dataset.labels("test")
        correct = sum(int((net(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum()) for i in range(0, len(xt), 1000))
        scale = torch.cat([net.features(x[i:i + 1000]) for i in range(0, len(x), 1000)]).pow(2).mean().rsqrt()
        net.feature_scale.fill_(scale.item())
    return net, correct / len(xt)


def load_classifier(space: Space, dataset=None) -> tuple[ClassifierNet, Path, float]:
    """The cached classifier of ``space`` (trained now on ``dataset``, the space's dataset at its
    image size, if absent): (net, weights path, test accuracy)."""
    def train() -> tuple[ClassifierNet, dict]:
        if getattr(dataset, "name", None) != space.dataset or tuple(getattr(dataset, "shape", ()))[1:] != (space.size,) * 2:
            raise GendiffError(f"the {space.name} features are not cached yet, and training them needs the "
                               f"{space.dataset} dataset at {space.size}x{space.size}")
        net, accuracy = train_classifier(dataset, space)
        if accuracy < space.min_accuracy:
            raise GendiffError(f"the {space.dataset} classifier reached only {accuracy:.3f} test accuracy "
                               f"(< {space.min_accuracy}); its features would not make FID meaningful")
        return net, {"test_accuracy": accuracy, "size": space.size, "dataset": space.dataset, "version": VERSION}

    net, weights, info = cached_classifier(space.stem, ClassifierNet(space.size), train)
    return net, weights, info["test_accuracy"]


def classifier_extractor_class():
    """The torch-fidelity feature extractor over a cached dataset classifier (imports torch-fidelity)."""
    def load(path: Path) -> nn.Module:
        from safetensors.torch import load_file

        net = ClassifierNet(json.loads(path.with_suffix(".json").read_text())["size"])
        net.load_state_dict(load_file(str(path)))
        return net

    return fidelity_extractor_class("ClassifierFeatureExtractor", load, 32)
