"""A small convolutional classifier of the 8x8 digits, trained once by gendiff and used as the
feature extractor that makes FID and KID meaningful for digits (Inception-v3 features of 8x8
images upsampled to 299x299 say little).

Trained with a fixed seed on the digits training split and cached in the user cache folder
(``$GENDIFF_CACHE`` or ``~/.cache/gendiff``); it must reach at least 97% test accuracy.
Features: ``"features"`` (the 128-dimensional penultimate layer, scaled to unit root-mean-square
on the training digits so that KID's polynomial kernel sees values of order 1, as with
Inception features) and ``"logits"`` (for the Inception-Score-style classifier score).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GendiffError

VERSION = 2
MIN_ACCURACY = 0.97


def cache_dir() -> Path:
    return Path(os.environ.get("GENDIFF_CACHE") or Path.home() / ".cache" / "gendiff")


def usable_cache_dir(*parts: str) -> Path:
    """The cache folder (or its subfolder ``parts``), created if needed; a clear error when it
    cannot be (a file in its place, no permission, a read-only disk)."""
    folder = cache_dir().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GendiffError(
            f"gendiff's cache folder {folder} cannot be used ({exc.strerror or exc}); it keeps the FID feature "
            f"classifiers and the reference statistics. Set GENDIFF_CACHE to a writable folder (the default is "
            f"~/.cache/gendiff); nothing was written.") from None
    return folder


def grey_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) on 0..255 (C = 1, or 3 equal channels) -> the grey input (N, 1, H, W)
    on [0, 1] that gendiff's dataset classifiers take."""
    return x.float().mean(dim=1, keepdim=True) / 255.0


class DigitsNet(nn.Module):
    """conv 3x3 (32) - conv 3x3 (64) - pool - dense 128 - dense 10, on grey levels scaled to [0, 1]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)
        self.register_buffer("feature_scale", torch.ones(()))  #: 1 / RMS of the training features

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features, scaled to unit RMS on the training digits."""
        return self.features(x) * self.feature_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = F.max_pool2d(h, 2).flatten(1)
        return F.relu(self.fc1(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def _train(seed: int = 0, epochs: int = 40) -> tuple[DigitsNet, float]:
    from ..datasets import Digits

    ds = Digits()
    x = ds.load("train").float() / (ds.levels - 1)
    y = ds.labels("train")
    xt = ds.load("test").float() / (ds.levels - 1)
    yt = ds.labels("test")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            batch = x[idx]
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()  # small translations
            batch = torch.roll(batch, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(xt).argmax(1) == yt).float().mean().item()
        net.feature_scale.fill_(net.features(x).pow(2).mean().rsqrt().item())
    return net, accuracy


def cached_classifier(stem: str, net: nn.Module, train) -> tuple[nn.Module, Path, dict]:
    """The classifier cached as ``<stem>.safetensors`` (and its JSON record ``<stem>.json``) in the
    cache folder, loaded into ``net``: (net in eval mode, weights path, record). When they are absent
    or damaged, ``train()`` -> (trained net, record) makes them (and its net is returned); one process trains while any other that asks
    at the same time waits for it (a file lock beside the weights: the evaluation jobs of a cluster
    that start together share one classifier, trained once). The record is written before the
    weights, each atomically, so a reader that finds the weights finds their record."""
    from filelock import FileLock
    from safetensors.torch import load_file, save

    from ..files import write_with, write_text

    folder = cache_dir()
    weights, record = folder / f"{stem}.safetensors", folder / f"{stem}.json"

    def cached() -> dict | None:
        if not (weights.is_file() and record.is_file()):
            return None
        try:
            net.load_state_dict(load_file(str(weights)))
            return json.loads(record.read_text())
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
            return None

    info = cached()
    if info is None:
        with FileLock(str(usable_cache_dir() / f".{stem}.lock")):
            info = cached()  # trained by another process while this one waited
            if info is None:
                net, info = train()
                write_text(record, json.dumps(info))
                # serialised in memory and written by Python: the file gets the umask's mode (safetensors'
                # own save_file makes it private to its owner, and a shared cache must be readable)
                write_with(weights, lambda tmp: tmp.write_bytes(save(net.state_dict())))
    return net.eval(), weights, info


def load_digits_net() -> tuple[DigitsNet, Path, float]:
    """The cached classifier (trained now if absent): (net, weights path, test accuracy)."""
    def train() -> tuple[DigitsNet, dict]:
        net, accuracy = _train()
        if accuracy < MIN_ACCURACY:
            raise GendiffError(f"the digits classifier reached only {accuracy:.3f} test accuracy (< {MIN_ACCURACY})")
        return net, {"test_accuracy": accuracy, "version": VERSION}

    net, weights, info = cached_classifier(f"digits-classifier-v{VERSION}", DigitsNet(), train)
    return net, weights, info["test_accuracy"]


def fidelity_extractor_class(class_name: str, load_net, size: int):
    """A torch-fidelity feature extractor class (imports torch-fidelity) over a classifier with
    ``features(x)``, ``fc2`` and ``feature_scale``: uint8 grey images (1 or 3 equal channels,
    0..255, ``size`` x ``size``) -> its scaled penultimate features ("features") or its logits
    ("logits", for the inception-score-like classifier score). ``load_net(path)`` builds the
    network from its saved weights."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class Extractor(FeatureExtractorBase):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.net = load_net(Path(feature_extractor_weights_path))
            self.net.eval().requires_grad_(False)

        @staticmethod
        def get_provided_features_list():
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits"}.get(metric, "features")

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 1, size, size, dtype=torch.uint8)

        def forward(self, x):
            raw = self.net.features(grey_unit(x))
            out = {"features": raw * self.net.feature_scale, "logits": self.net.fc2(raw)}
            return tuple(out[name] for name in self.features_list)

    Extractor.__name__ = Extractor.__qualname__ = class_name
    return Extractor


def digits_feature_extractor_class():
    """The torch-fidelity feature extractor over the digits classifier (imports torch-fidelity)."""
    def load(path: Path) -> nn.Module:
        from safetensors.torch import load_file

        net = DigitsNet()
        net.load_state_dict(load_file(str(path)))
        return net

    return fidelity_extractor_class("DigitsFeatureExtractor", load, 8)
