"""PNG grids of generated samples (Pillow), labelled and written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def image_grid(images: np.ndarray, *, pad: int = 1, scale: int = 4, pad_value: float = 1.0):
    """Tiles ``images`` (rows, cols, H, W, C) with values in [0, 1] into one uint8 image
    (rows·(H+pad)+pad, cols·(W+pad)+pad, C), each pixel repeated ``scale`` times."""
    images = np.asarray(images, np.float32)
    if images.ndim != 5:
        raise ValueError(f"image_grid: expected (rows, cols, H, W, C), got shape {images.shape}.")
    rows, cols, h, w, c = images.shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.float32)
    for r in range(rows):
        for k in range(cols):
            y, x = pad + r * (h + pad), pad + k * (w + pad)
            grid[y : y + h, x : x + w] = images[r, k]
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return (np.clip(grid, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def side_by_side(grids: Sequence[np.ndarray], gap: int = 8) -> np.ndarray:
    """Joins uint8 grids of equal height left to right with a white gap."""
    heights = {g.shape[0] for g in grids}
    if len(heights) != 1:
        raise ValueError(f"side_by_side: grids differ in height: {sorted(heights)}.")
    white = np.full((grids[0].shape[0], gap, grids[0].shape[2]), 255, np.uint8)
    parts: list[np.ndarray] = []
    for g in grids:
        parts += [g, white]
    return np.concatenate(parts[:-1], axis=1)


def _font(size: int):
    from PIL import ImageFont

    try:  # Pillow >= 10.1: a scalable font where FreeType is available
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: its fixed bitmap font
        return ImageFont.load_default()


def annotate(
    image: np.ndarray,
    *,
    title: str | None = None,
    row_labels: Sequence[str] = (),
    column_labels: Sequence[str] = (),
    gap: int = 8,
    font_size: int = 14,
) -> np.ndarray:
    """Labels a uint8 image (H, W, C) so that it reads on its own: a ``title`` line above,
    ``column_labels`` centred above its panels and ``row_labels`` left of its rows.

    The rows are ``len(row_labels)`` bands of equal height (the rows of
    :func:`image_grid`); the panels are ``len(column_labels)`` equal widths joined by
    ``gap`` pixels (:func:`side_by_side`'s layout).

    Returns:
      A larger uint8 image with the same channels, the labels in black on white.
    """
    from PIL import Image, ImageDraw

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"annotate: need uint8 (H, W, 1|3), got {image.dtype} {image.shape}.")
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))

    def size(text):
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    line = max(size("Ag")[1], 1) + 6
    h, w, c = image.shape
    left = max((size(t)[0] for t in row_labels), default=0)
    left = left + 10 if row_labels else 0
    top = line * (bool(title) + bool(column_labels))
    titles_w = size(title)[0] + 10 if title else 0
    width = max(left + w, titles_w)
    canvas = Image.new("L" if c == 1 else "RGB", (width, top + h), "white")
    canvas.paste(Image.fromarray(image[..., 0] if c == 1 else image), (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((5, 3), title, fill="black", font=font)
    if column_labels:
        n = len(column_labels)
        panel = (w - gap * (n - 1)) / n
        for i, text in enumerate(column_labels):
            centre = left + i * (panel + gap) + panel / 2
            x = min(max(centre - size(text)[0] / 2, 0), width - size(text)[0])
            draw.text((x, top - line + 3), text, fill="black", font=font)
    for r, text in enumerate(row_labels):
        centre = top + (r + 0.5) * h / len(row_labels)
        draw.text((5, centre - size(text)[1] / 2 - 2), text, fill="black", font=font)
    out = np.asarray(canvas, np.uint8)
    return out[..., None] if c == 1 else out


def class_labels(num_classes: int, forget_class: int, names: Sequence[str] = ()) -> list[str]:
    """Row labels of a per-class grid: ``"class 3"`` (or its name), the forgotten class
    marked ``"(forgotten)"``."""
    labels = list(names) or [f"class {k}" for k in range(num_classes)]
    return [f"{t} (forgotten)" if k == forget_class else t for k, t in enumerate(labels)]


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes a uint8 (H, W, 1 or 3) image as PNG; the file appears complete or not at all.

    Raises:
      ValueError: for a wrong shape or dtype.
    """
    from PIL import Image  # local: only the writers need Pillow

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"save_png: need uint8 (H, W, 1|3), got {image.dtype} {image.shape}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format="PNG")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the image from others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
