"""Networks from other libraries as the explicit ``model`` of :func:`gendiff.build`.

A diffusers ``UNet2DModel`` indexes time 0..T-1 and returns an output object; gendiff calls its
network with the paper's t in {1..T} and expects a tensor. :class:`DiffusersNet` does the two
conversions (``unet(x, t - 1).sample``, labels as ``class_labels``), and :func:`adapt_model`
applies it to any diffusers model handed to ``build``. The time convention is stated once, in
:mod:`gendiff.interop`. To bring a diffusers *folder* in as a gendiff run (gendiff's own U-Net,
every command), use ``gendiff import diffusers``.
"""

from __future__ import annotations

from torch import Tensor, nn


class DiffusersNet(nn.Module):
    """``net(x, t[, cond]) = unet(x, t - 1[, class_labels=cond]).sample`` for a diffusers U-Net."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        out = self.unet(x, t - 1, class_labels=cond) if cond is not None else self.unet(x, t - 1)
        return out.sample if hasattr(out, "sample") else out[0]


def is_diffusers(model: object) -> bool:
    return type(model).__module__.split(".")[0] == "diffusers"


def adapt_model(model):
    """``model`` as gendiff calls a network: a diffusers model wrapped in :class:`DiffusersNet`;
    anything else unchanged."""
    if is_diffusers(model):
        if not hasattr(model, "config") or not isinstance(model, nn.Module):
            raise TypeError(f"{type(model).__name__} is a diffusers object but not a model gendiff can call; pass a "
                            f"UNet2DModel (or import its folder: gendiff import diffusers PATH --out RUN)")
        return DiffusersNet(model)
    return model
