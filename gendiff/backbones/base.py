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

import torch
from torch import Tensor, nn

from ..component import Component
from ..errors import BackboneError, GendiffError


class Backbone(Component, nn.Module):
    """Base class of registered networks: ``forward(x, t[, cond]) -> output``."""

    family: ClassVar[str] = "backbone"


def describe_network(net) -> str:
    """"backbone 'NAME' (from MODULE)" for a network, seen through DDP's and torch.compile's wrappers."""
    for _ in range(4):
        inner = getattr(net, "module", None) or getattr(net, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        net = inner
    return f"backbone '{getattr(net, 'name', type(net).__name__)}' (from {type(net).__module__})"


def run_network(net, expected: tuple[int, ...], x_in: Tensor, *rest: Tensor) -> Tensor:
    """``net(x_in, *rest)``, checked: a network (a plugin's included) that raises, runs out of
    memory, or returns anything but a floating-point tensor of shape ``expected`` is a
    :class:`~gendiff.errors.BackboneError` naming it and its module (one paragraph, no traceback)."""
    try:
        out = net(x_in, *rest)
    except GendiffError:
        raise
    except torch.OutOfMemoryError:
        raise BackboneError(f"{describe_network(net)} ran out of memory on a batch of {len(x_in)}: use a smaller "
                            f"batch (train.batch_size, or --batch-size when sampling or evaluating)") from None
    except Exception as exc:  # noqa: BLE001 - whatever a plugin's network raises is named, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BackboneError(f"{describe_network(net)} failed on an input of shape {tuple(x_in.shape)}"
                            f" ({type(exc).__name__}{': ' + first if first else ''})") from exc
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(expected) or not out.is_floating_point():
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        raise BackboneError(f"{describe_network(net)} returned {got} for an input of shape {tuple(x_in.shape)}; it "
                            f"must return a floating-point tensor of shape {tuple(expected)}")
    return out
