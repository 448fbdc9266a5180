"""Backbones: the neural network of the reverse process, called as ``net(x, t)``.

Interface: :class:`Backbone`, an ``nn.Module`` constructed by gendiff with three keyword
arguments decided by the other components and the data, plus the recipe's ``[backbone]`` table:

- ``in_channels``: data channels plus what the schedule adds (:attr:`NoiseSchedule.extra_input_channels`);
- ``out_channels``: what the parameterization and the variance need together (a learned
  variance doubles the data channels);
- ``image_size``: the data's height (= width).

``forward(x, t)`` takes x of shape (B, in_channels, H, W) and the paper's t in {1..T} as an
integer tensor (B,), and returns (B, out_channels, H, W). A backbone that cannot produce the
asked-for shape raises ``ValueError`` in its constructor; gendiff reports it with the names of
the components that asked.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ..component import Component


class Backbone(Component, nn.Module):
    """Base class of registered networks: ``forward(x, t) -> output``."""

    family: ClassVar[str] = "backbone"
