"""gendiff-example: one component of each kind a research plugin typically adds, written against
gendiff's public hooks and interfaces only (nothing here is imported from gendiff's internals).

- backbone ``example-cond-net``: a small class-conditional convolutional network;
- weighting ``soft-min-snr``: the x0 error weighted by a smooth minimum of SNR(t) and gamma;
- metric ``mean-pixel``: the mean pixel of samples against the test split's;
- a logger: every training event appended to ``RUN/example-events.jsonl``, the run's result to
  ``RUN/example-summary.json``.
"""

from __future__ import annotations

import json
import math

import torch
from torch import nn

import gendiff
from gendiff.backbones import Backbone
from gendiff.evaluation import Metric
from gendiff.weightings import LossWeighting

__version__ = "0.1.0"


class ConditionalNet(Backbone):
    """Two 3x3 convolutions around a time-and-label embedding added to the features.

    Args (set by gendiff): in_channels, out_channels, image_size, num_classes (K; the label K is
    the null label of classifier-free guidance). Recipe: ``width`` (32)."""

    name = "example-cond-net"
    provides = frozenset({"class-labels"})
    example_args = {"width": 16}

    def __init__(self, in_channels: int, out_channels: int, image_size: int, num_classes: int = 0, width: int = 32):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        self.num_classes, self.width = num_classes, width
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(16, width), nn.SiLU(), nn.Linear(width, width))
        self.labels = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, x, t, cond=None):
        freqs = torch.exp(-math.log(1000.0) * torch.arange(8, device=x.device) / 8)
        angles = t.float()[:, None] * freqs[None]
        emb = self.time(torch.cat([angles.sin(), angles.cos()], dim=1))
        if self.labels is not None:
            if cond is None:  # no labels: the null label
                cond = torch.full((len(x),), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.labels(cond)
        h = torch.nn.functional.silu(self.conv_in(x) + emb[:, :, None, None])
        h = torch.nn.functional.silu(self.conv_mid(h))
        return self.conv_out(h)


class SoftMinSNR(LossWeighting):
    """The x0 error weighted by gamma * SNR / (gamma + SNR), a smooth version of min-SNR-gamma
    (Hang et al. 2023): close to SNR for small SNR and to gamma for large SNR."""

    name = "soft-min-snr"
    requires = {"schedule": frozenset({"gaussian"}), "parameterization": frozenset({"eps"})}

    def __init__(self, gamma: float = 5.0):
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or gamma <= 0:
            raise ValueError(f"gamma must be a positive number, got {gamma!r}")
        self.gamma = float(gamma)

    def loss(self, terms):
        snr = terms.snr()
        return self.gamma * snr / (self.gamma + snr) * terms.mse("x0")


class MeanPixel(Metric):
    """The mean pixel (0..255) of 32 samples against the test split's."""

    name = "mean-pixel"

    def evaluate(self, context):
        samples = context.samples(32)
        test = context.dataset.load("test").double() * 255 / (context.dataset.levels - 1)
        return {"samples": float(samples.mean()), "test": float(test.mean()),
                "difference": float(abs(samples.mean() - test.mean()))}


@gendiff.hookimpl
def gendiff_register_backbones():
    return [ConditionalNet]


@gendiff.hookimpl
def gendiff_register_weightings():
    return [SoftMinSNR]


@gendiff.hookimpl
def gendiff_register_metrics():
    return [MeanPixel]


def _event(run, **fields):
    with open(run.run_dir / "example-events.jsonl", "a") as fh:
        fh.write(json.dumps({k: str(v) if not isinstance(v, (int, float, dict)) else v for k, v in fields.items()})
                 + "\n")


@gendiff.hookimpl
def gendiff_train_step_end(run, step, figures):
    _event(run, event="step", step=step, loss=figures["loss"])


@gendiff.hookimpl
def gendiff_checkpoint_written(run, step, path):
    _event(run, event="checkpoint", step=step, path=path.name)


@gendiff.hookimpl
def gendiff_samples_written(run, step, path):
    _event(run, event="samples", step=step, path=path.name)


@gendiff.hookimpl
def gendiff_run_end(run, result):
    (run.run_dir / "example-summary.json").write_text(json.dumps(result, default=str))
