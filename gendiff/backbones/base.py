"""Backbones: the neural network of the reverse process, called as ``net(x, t)`` or, for a
conditional model, ``net(x, t, cond)``.

Interface: :class:`Backbone`, an ``nn.Module`` constructed by gendiff with keyword arguments
decided by the other components and the data, plus the recipe's ``[backbone]`` table:

- ``in_channels``: data channels plus what the schedule adds (:attr:`NoiseSchedule.extra_input_channels`);
- ``out_channels``: what the parameterization and the variance need together (a learned
  variance doubles the data channels);
- ``image_size``: the data's height (= width);
- ``num_classes``: only for a backbone that declares ``"class-labels"`` in ``provides``: K, the
  number of classes of a conditional recipe (0 when the recipe is unconditional).

``forward(x, t, cond=None)`` takes x of shape (B, in_channels, H, W), the schedule's network time
t (B,) (the paper's t in {1..T} as an integer tensor for a discrete schedule; 1000 t as a float
tensor for a continuous one) and, for a conditional recipe, labels ``cond`` (B,) in {0..K}, where
K is the null label ("no class", for classifier-free guidance). It returns (B, out_channels, H, W).
gendiff passes ``cond`` only to a conditional model, so an unconditional backbone may define
``forward(x, t)``. A backbone that cannot produce the asked-for shape raises ``ValueError`` in its
constructor; gendiff reports it with the names of the components that asked.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ..component import Component


class Backbone(Component, nn.Module):
    """Base class of registered networks: ``forward(x, t[, cond]) -> output``."""

    family: ClassVar[str] = "backbone"
