"""PNG grids of generated samples (Pillow), written atomically."""

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
