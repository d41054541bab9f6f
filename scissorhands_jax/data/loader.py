"""A deterministic, seedable image loader: index subsets, per-batch augmentation, one
normalisation.

Every batch is a pure function of ``(key, batch_index)``: the epoch order is a
permutation drawn from ``key`` (the rule of :func:`array_source`) and batch ``i`` is
augmented with ``fold_in(key, i)``. So a run resumed at step ``i`` of an epoch draws the
same batches as an uninterrupted one, on any host, with no loader state to checkpoint.

We use our own loader rather than grain: the whole contract is those two rules over an
in-memory (or lazily read) table, it needs no worker processes on the data sizes of the
paper (CIFAR/SVHN fit in host memory as uint8), it adds no dependency, and resuming is
``start=i`` instead of a checkpointed iterator. Host work per batch is one gather, one
padded crop and one affine map, which JAX's asynchronous dispatch overlaps with the
device step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np

from scissorhands_jax._types import Batch, PRNGKey
from scissorhands_jax.data.batching import permutation

AUGMENTATIONS = ("crop_flip", "flip", "none")


class ImageArray(Protocol):
    """Random access to uint8 images: ``images[idx] -> (len(idx), H, W, C)``."""

    shape: tuple[int, ...]

    def __getitem__(self, idx: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ImageTable:
    """Images and integer labels sharing the leading example axis.

    Attributes:
      images: ``(n, H, W, C)`` uint8, a NumPy array or any :class:`ImageArray` that
        reads lazily (e.g. image files).
      labels: ``(n,)`` int32 class ids.
    """

    images: Any
    labels: np.ndarray

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"images ({self.images.shape[0]}) and labels ({self.labels.shape[0]}) "
                "disagree on the number of examples."
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Normalization:
    r"""The one place where pixels become model inputs:
    :math:`x = (u / \text{max\_value} - \mu) / \sigma` per channel.

    Attributes:
      mean: per-channel mean :math:`\mu` of ``u / max_value``.
      std: per-channel standard deviation :math:`\sigma`.
      max_value: the pixel value that maps to 1 (255 for 8-bit images).
    """

    mean: Sequence[float]
    std: Sequence[float]
    max_value: float = 255.0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, np.float32)
        scale = np.asarray(self.std, np.float32) * np.float32(self.max_value)
        # one fused affine map: (u / m - mean) / std = u / (std m) - mean / std
        return images.astype(np.float32) / scale - mean / np.asarray(self.std, np.float32)


def _rng(key: PRNGKey) -> np.random.Generator:
    data = np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel()
    return np.random.default_rng(data.tolist())


def random_crop_flip(
    images: np.ndarray, key: PRNGKey, *, pad: int = 4, crop: bool = True, flip: bool = True
) -> np.ndarray:
    """Pad-``pad`` random crop and random horizontal flip, a pure function of ``key``.

    Each image is zero-padded by ``pad`` pixels on every side, cut back to its size at an
    offset ``(dy, dx)`` drawn uniformly from ``{0..2 pad}^2``, and mirrored left-right
    with probability 1/2 (the CIFAR recipe of He et al. 2016). The draws come from
    NumPy's PCG64 seeded with the key's bits: the same key gives the same batch on any
    host.

    Args:
      images: ``(B, H, W, C)`` array.
      key: the batch's key, e.g. ``fold_in(epoch_key, batch_index)``.
      pad: padding of the crop.
      crop: apply the random crop.
      flip: apply the random flip.

    Returns:
      The augmented ``(B, H, W, C)`` array, same dtype.
    """
    b, h, w = images.shape[:3]
    rng = _rng(key)
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, b)) if crop else np.zeros((2, b), int)
    mirror = rng.random(b) < 0.5 if flip else np.zeros(b, bool)
    if crop:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    cols = np.where(mirror[:, None], cols[:, ::-1], cols)
    return images[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


@dataclass(frozen=True)
class ImageSource:
    """One epoch of normalised (and optionally augmented) batches of a table subset.

    A :data:`BatchSource`: ``source(key)`` yields ``{"image": float32 (b, H, W, C),
    "label": int32 (b,)}`` batches. The order is ``indices[perm]`` with ``perm`` drawn
    from ``key`` (:func:`scissorhands_jax.data.array_source`'s rule); batch ``i`` is
    augmented with ``fold_in(key, i)``.

    Attributes:
      table: the :class:`ImageTable`.
      indices: which rows of the table form this set (in stored order).
      batch_size: examples per batch.
      normalization: the :class:`Normalization` applied to every batch.
      augment: ``"crop_flip"``, ``"flip"`` or ``"none"``.
      shuffle: draw a permutation per epoch (else keep ``indices`` order).
      drop_last: drop the final short batch.
      pad: padding of the random crop.
    """

    table: ImageTable
    indices: np.ndarray
    batch_size: int
    normalization: Normalization
    augment: str = "none"
    shuffle: bool = True
    drop_last: bool = False
    pad: int = 4

    def __post_init__(self):
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")

    def __len__(self) -> int:
        return int(len(self.indices))

    @property
    def num_batches(self) -> int:
        """Batches per epoch."""
        n, b = len(self), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def batches(self, key: PRNGKey, start: int = 0) -> Iterator[Batch]:
        """The batches ``start, start + 1, ...`` of the epoch that ``key`` draws."""
        n = len(self)
        order = permutation(key, n) if self.shuffle else np.arange(n)
        for i in range(start, self.num_batches):
            rows = np.asarray(self.indices)[order[i * self.batch_size : (i + 1) * self.batch_size]]
            images = np.asarray(self.table.images[rows])
            if self.augment != "none":
                images = random_crop_flip(
                    images,
                    jax.random.fold_in(key, i),
                    pad=self.pad,
                    crop=self.augment == "crop_flip",
                )
            yield {
                "image": self.normalization(images),
                "label": np.asarray(self.table.labels[rows], np.int32),
            }

    def __call__(self, key: PRNGKey) -> Iterator[Batch]:
        return self.batches(key)
