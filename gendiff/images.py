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


#: the largest picture gendiff decodes (PIL's own warning threshold, about 89 megapixels: a
#: decompression bomb a few kB on disk would otherwise take gigabytes of memory)
MAX_PIXELS = 89_478_485


class PictureError(ValueError):
    """A file that is not a usable picture; ``kind`` says why, for counting ("unreadable",
    "truncated", "too large")."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _opened(file: Path):
    """PIL's lazy image of ``file`` (header only), refusing pictures above MAX_PIXELS before any
    pixel is decoded."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(file)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PictureError("too large", f"{file} is larger than {MAX_PIXELS:,} pixels") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for files that are not pictures
        raise PictureError("unreadable", f"{file} is not a readable picture ({exc})") from None
    if img.size[0] * img.size[1] > MAX_PIXELS:
        img.close()
        raise PictureError("too large", f"{file} is {img.size[0]}x{img.size[1]}, more than {MAX_PIXELS:,} pixels")
    return img


def check_picture(file: Path) -> None:
    """Raise :class:`PictureError` unless ``file`` is a whole, readable picture of sane size.
    PNGs are checked chunk by chunk against their CRCs (a truncated or altered file fails; no
    pixel is decoded); other formats (JPEG) are decoded at reduced scale (``draft``)."""
    img = _opened(file)
    try:
        if img.format == "PNG":
            img.verify()
        else:
            img.draft(img.mode, (64, 64))
            img.load()
    except PictureError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PictureError("truncated", f"{file} is truncated or damaged ({exc})") from None
    finally:
        img.close()


def read_picture(file: Path, mode: str | None = None):
    """The decoded picture in ``file`` as an 8-bit PIL image: 16-bit grey scaled (:func:`eight_bit`),
    transparency (RGBA, LA, a palette or colour key with a transparent entry) composited onto
    white, then converted to ``mode`` ("L" or "RGB"; None: "L" for grey pictures, else "RGB").
    Raises :class:`PictureError` for anything that is not such a picture (never decodes one
    larger than MAX_PIXELS)."""
    from PIL import Image

    img = _opened(file)
    try:
        with img:
            img.load()
            picture = eight_bit(img)
            grey = picture.mode in ("1", "L", "LA", "I", "F") or (picture.mode == "P" and _grey_palette(picture))
            if picture.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in picture.info:
                rgba = picture.convert("RGBA")
                picture = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            return picture.convert(mode or ("L" if grey else "RGB"))
    except PictureError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PictureError("truncated", f"{file} cannot be decoded ({exc})") from None


def _grey_palette(img) -> bool:
    palette = np.asarray(img.getpalette() or [], dtype=np.int64)[: 3 * 256].reshape(-1, 3)
    return bool(len(palette)) and bool((palette == palette[:, :1]).all())


def save_png(picture: np.ndarray, path: Path, scale: int = 1) -> None:
    """Write a uint8 (H, W, C) picture as PNG (C = 1 grey, C = 3 RGB), enlarged ``scale`` times."""
    from PIL import Image

    from .files import write_with

    if scale > 1:
        picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    mode = "L" if picture.shape[2] == 1 else "RGB"
    image = Image.fromarray(picture[..., 0] if mode == "L" else picture, mode)
    write_with(Path(path), lambda tmp: image.save(tmp, format="PNG"))  # atomic: a good picture or the old one


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
    from .files import write_with

    write_with(Path(path), lambda tmp: canvas.save(tmp, format="PNG"))
