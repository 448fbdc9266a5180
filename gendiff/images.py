"""Converting between the model's [-1, 1] scale, data levels and 8-bit pictures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .distributions import unit_to_levels


def to_uint8(x: Tensor, levels: int) -> np.ndarray:
    """Samples on [-1, 1] (N, C, H, W) -> uint8 pictures (N, H, W, C) in 0..255: each value goes
    to its nearest of the K data levels, which are then spread over 0..255."""
    k = unit_to_levels(x.detach().float().cpu(), levels)
    pixels = torch.round(k.double() * 255.0 / (levels - 1)).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 picture with the images in a grid."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return out


def save_png(picture: np.ndarray, path: Path, scale: int = 1) -> None:
    """Write a uint8 (H, W, C) picture as PNG (C = 1 grey, C = 3 RGB), enlarged ``scale`` times."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if scale > 1:
        picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    mode = "L" if picture.shape[2] == 1 else "RGB"
    Image.fromarray(picture[..., 0] if mode == "L" else picture, mode).save(path)
