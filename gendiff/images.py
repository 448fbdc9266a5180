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


def eight_bit(img):
    """A PIL image with 16- or 32-bit integer grey pixels ("I;16", "I") scaled to 8 bits (the top
    byte of a 16-bit value); PIL's own conversion would clip them, turning 50% grey white. Other
    modes pass through unchanged."""
    from PIL import Image

    if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return img
    values = np.asarray(img, dtype=np.int64)
    top = 65535 if img.mode.startswith("I;16") or values.max(initial=0) <= 65535 else int(values.max())
    return Image.fromarray(np.clip(np.round(values * (255 / top)), 0, 255).astype(np.uint8), "L")


def save_png(picture: np.ndarray, path: Path, scale: int = 1) -> None:
    """Write a uint8 (H, W, C) picture as PNG (C = 1 grey, C = 3 RGB), enlarged ``scale`` times."""
    from PIL import Image

    from .files import write_png

    if scale > 1:
        picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    mode = "L" if picture.shape[2] == 1 else "RGB"
    image = Image.fromarray(picture[..., 0] if mode == "L" else picture, mode)
    write_png(Path(path), lambda tmp: image.save(tmp, format="PNG"))  # atomic: a good picture or the old one


def save_labelled_rows(rows: list[np.ndarray], labels: list[str] | None, path: Path, scale: int = 1, pad: int = 1,
                       columns: list[str] | None = None) -> None:
    """Write rows of uint8 pictures (each (n_i, H, W, C)) as one PNG, enlarged ``scale`` times,
    with ``labels[i]`` written in a white margin left of row i (e.g. one row per class) and
    ``columns[j]`` above column j (e.g. the time t or the weight lambda of each column); either
    may be None (no margin)."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows or (labels is not None and len(rows) != len(labels)):
        raise ValueError(f"{len(rows)} rows for {0 if labels is None else len(labels)} labels")
    width = max(len(r) for r in rows)
    if columns is not None and len(columns) != width:
        raise ValueError(f"{width} columns for {len(columns)} column labels")
    blank = np.full_like(rows[0][:1], 255)
    body = np.concatenate([grid(np.concatenate([r, blank.repeat(width - len(r), 0)]), nrow=width, pad=pad)[:-pad]
                           for r in rows])
    body = np.concatenate([body, np.full_like(body[:pad], 255)])  # the bottom edge
    body = body.repeat(scale, axis=0).repeat(scale, axis=1)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    margin = 8 + max(int(measure.textlength(text, font=font)) for text in labels) if labels else 0
    header = 0
    if columns:
        header = 6 + max(measure.textbbox((0, 0), text, font=font)[3] for text in columns)
    mode = "L" if body.shape[2] == 1 else "RGB"
    ink = 0 if mode == "L" else (0, 0, 0)
    canvas = Image.new(mode, (margin + body.shape[1], header + body.shape[0]), 255 if mode == "L" else (255, 255, 255))
    canvas.paste(Image.fromarray(body[..., 0] if mode == "L" else body, mode), (margin, header))
    draw = ImageDraw.Draw(canvas)
    row_height = body.shape[0] / len(rows)
    for i, text in enumerate(labels or []):
        top, bottom = draw.textbbox((0, 0), text, font=font)[1::2]
        draw.text((4, header + i * row_height + (row_height - (bottom - top)) / 2 - top), text, fill=ink, font=font)
    column_width = (body.shape[1] - pad * scale) / width
    for j, text in enumerate(columns or []):
        left = margin + pad * scale + j * column_width + (column_width - pad * scale - measure.textlength(text, font=font)) / 2
        draw.text((left, 2), text, fill=ink, font=font)
    from .files import write_png

    write_png(Path(path), lambda tmp: canvas.save(tmp, format="PNG"))
