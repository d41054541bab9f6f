"""A deterministic, seedable image loader: index subsets, per-batch augmentation, one
normalisation, a background prefetch.

Every batch is a pure function of ``(key, batch_index)``: the epoch order is a
permutation drawn from ``key`` (the rule of :func:`array_source`) and batch ``i`` is
augmented with ``fold_in(key, i)``. So a run resumed at step ``i`` of an epoch draws the
same batches as an uninterrupted one, on any host, with no loader state to checkpoint.

The loader never waits for the device. ``key`` is read once per epoch; the batch keys
``fold_in(key, i)`` are computed on the host (:func:`threefry_fold_in`, the same bits as
JAX's), where reading a device-computed key back every batch would wait for the training
step in flight. A thread prepares the next one or two batches (gather, crop, flip,
normalisation, and optionally ``jax.device_put`` onto a device or mesh sharding) while
the device computes. With several processes, every process yields the whole global
batch by default (each then transfers only its own devices' shards of it); a source
given ``process_count`` yields only this process's rows of every global batch instead.

We use our own loader rather than grain: the whole contract is those two rules over an
in-memory (or lazily read, once-decoded) table, it needs no worker processes on the data
sizes of the paper (CIFAR/SVHN fit in host memory as uint8; CelebA-HQ is decoded once
into a uint8 cache), it adds no dependency, and resuming is ``start=i`` instead of a
checkpointed iterator. What grain would add (worker processes, a sharded record reader)
pays off when host decoding outruns one thread; host work per CIFAR batch here is one
gather, one padded crop and one affine map, a few milliseconds, well under a device step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np

from scissorhands_jax._types import Batch, PRNGKey
from scissorhands_jax.data.batching import permutation
from scissorhands_jax.parallel import local_batch_slice

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


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry_fold_in(words: np.ndarray, data: int) -> np.ndarray:
    r"""``key_data(fold_in(key, data))`` of a threefry key, computed on the host.

    JAX's default keys fold data in with the Threefry-2x32 block cipher (Salmon et al.
    2011, 20 rounds): the key ``(k_0, k_1)`` encrypts the counter ``(0, data)``, with the
    key schedule :math:`k_2 = k_0 \oplus k_1 \oplus \texttt{0x1BD11BDA}` injected
    every four rounds. Computing it in NumPy gives the same two words without a device
    program, so a loader never waits for the training step in flight to read a key.

    Args:
      words: the key's two uint32 words (``jax.random.key_data(key)``).
      data: the integer folded in, ``0 <= data < 2**32``.

    Returns:
      The two uint32 words of the folded key.
    """
    with np.errstate(over="ignore"):
        k = [np.uint32(words[0]), np.uint32(words[1])]
        ks = [k[0], k[1], k[0] ^ k[1] ^ np.uint32(0x1BD11BDA)]
        x = [np.uint32(0) + ks[0], np.uint32(data) + ks[1]]
        for block in range(5):
            for r in _THREEFRY_ROTATIONS[block % 2]:
                x[0] = x[0] + x[1]
                x[1] = _rotl(x[1], r) ^ x[0]
            x[0] = x[0] + ks[(block + 1) % 3]
            x[1] = x[1] + ks[(block + 2) % 3] + np.uint32(block + 1)
    return np.array(x, np.uint32)


def key_words(key: PRNGKey) -> np.ndarray:
    """The raw uint32 words of a typed or raw key (waits for the key once, if in flight)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key, dtype=np.uint32).ravel()


def _is_threefry(key: PRNGKey) -> bool:
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.config.jax_default_prng_impl == "threefry2x32"
    return str(jax.random.key_impl(key)) in ("threefry2x32", "PRNGImpl(threefry2x32)")


def batch_words(key: PRNGKey, indices: Sequence[int]) -> list[np.ndarray]:
    """``key_words(fold_in(key, i))`` for every ``i`` of ``indices``, reading ``key`` once.

    Threefry keys (JAX's default) fold on the host (:func:`threefry_fold_in`); other
    implementations fold on the CPU device, never behind an accelerator's queue.
    """
    words = key_words(key)
    if _is_threefry(key):
        return [threefry_fold_in(words, int(i)) for i in indices]
    cpu = jax.local_devices(backend="cpu")[0]
    with jax.default_device(cpu):
        key = jax.device_put(key, cpu)
        return [key_words(jax.random.fold_in(key, int(i))) for i in indices]


def _crop_flip_draws(words: np.ndarray, b: int, pad: int, crop: bool, flip: bool):
    rng = np.random.default_rng(np.asarray(words, np.uint32).tolist())
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, b)) if crop else np.zeros((2, b), int)
    mirror = rng.random(b) < 0.5 if flip else np.zeros(b, bool)
    return dy, dx, mirror


def _crop_flip_apply(images, dy, dx, mirror, pad: int, crop: bool) -> np.ndarray:
    b, h, w = images.shape[:3]
    if crop:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    cols = np.where(mirror[:, None], cols[:, ::-1], cols)
    return images[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


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
      key: the batch's key, e.g. ``fold_in(epoch_key, batch_index)``, or its raw uint32
        words.
      pad: padding of the crop.
      crop: apply the random crop.
      flip: apply the random flip.

    Returns:
      The augmented ``(B, H, W, C)`` array, same dtype.
    """
    dy, dx, mirror = _crop_flip_draws(key_words(key), images.shape[0], pad, crop, flip)
    return _crop_flip_apply(images, dy, dx, mirror, pad, crop)


_DONE = object()


def prefetch(batches: Iterator[Any], depth: int, device: Any = None) -> Iterator[Any]:
    """Yields the items of ``batches`` (same order), produced ``depth`` ahead by a thread.

    The thread prepares the next batches (gather, augmentation, normalisation, and
    ``jax.device_put(batch, device)`` when ``device`` is a device or sharding) while the
    caller's device step runs. Closing the generator stops the thread; an exception in
    the thread is raised in the caller at the batch where it happened.
    """
    if depth < 1:
        yield from (b if device is None else jax.device_put(b, device) for b in batches)
        return
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for batch in batches:
                if not put(batch if device is None else jax.device_put(batch, device)):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the caller
            put(err)

    thread = threading.Thread(target=work, name="scissorhands-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class ImageSource:
    """One epoch of normalised (and optionally augmented) batches of a table subset.

    A :data:`BatchSource`: ``source(key)`` yields ``{"image": float32 (b, H, W, C),
    "label": int32 (b,)}`` batches. The order is ``indices[perm]`` with ``perm`` drawn
    from ``key`` (:func:`scissorhands_jax.data.array_source`'s rule); batch ``i`` is
    augmented with ``fold_in(key, i)``, folded on the host (:func:`batch_words`).

    Attributes:
      table: the :class:`ImageTable`.
      indices: which rows of the table form this set (in stored order).
      batch_size: examples per (global) batch.
      normalization: the :class:`Normalization` applied to every batch.
      augment: ``"crop_flip"``, ``"flip"`` or ``"none"``.
      shuffle: draw a permutation per epoch (else keep ``indices`` order).
      drop_last: drop the final short batch.
      pad: padding of the random crop.
      prefetch: batches a background thread prepares ahead (0: prepare in the caller).
      device: a device or sharding that the prefetch thread puts each batch on with
        ``jax.device_put`` (None: NumPy batches, placed by the caller).
      process_index: which process this is (None: ``jax.process_index()``); read only
        with ``process_count``.
      process_count: None (the default): every process yields the whole global batch,
        which is what the library's loops expect in a multi-process job
        (:func:`scissorhands_jax.parallel.shard_batch` transfers each process's own
        shards). A count P (e.g. ``jax.process_count()``): the batch is shared by P
        processes and each reads and yields only its rows of every global batch
        (:func:`scissorhands_jax.parallel.local_batch_slice`, which needs batches that
        split evenly: ``drop_last`` or a multiple of the batch size), augmented exactly
        as in the global batch; ``parallel.from_process_local`` assembles them.
    """

    table: ImageTable
    indices: np.ndarray
    batch_size: int
    normalization: Normalization
    augment: str = "none"
    shuffle: bool = True
    drop_last: bool = False
    pad: int = 4
    prefetch: int = 2
    device: Any = None
    process_index: int | None = None
    process_count: int | None = None

    def __post_init__(self):
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 batches, got {self.prefetch}.")

    def __len__(self) -> int:
        return int(len(self.indices))

    @property
    def num_batches(self) -> int:
        """Batches per epoch."""
        n, b = len(self), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _process(self) -> tuple[int, int]:
        if self.process_count is None:  # the whole global batch, on every process
            return 0, 1
        index = jax.process_index() if self.process_index is None else self.process_index
        return int(index), int(self.process_count)

    def _batch(self, rows: np.ndarray, words: np.ndarray | None, local: slice) -> Batch:
        images = np.asarray(self.table.images[rows[local]])
        if words is not None:
            crop = self.augment == "crop_flip"
            dy, dx, mirror = _crop_flip_draws(words, len(rows), self.pad, crop, True)
            images = _crop_flip_apply(images, dy[local], dx[local], mirror[local], self.pad, crop)
        return {
            "image": self.normalization(images),
            "label": np.asarray(self.table.labels[rows[local]], np.int32),
        }

    def _host_batches(self, order: np.ndarray, words: list, start: int) -> Iterator[Batch]:
        index, count = self._process()
        indices = np.asarray(self.indices)
        for i, w in enumerate(words, start):
            rows = indices[order[i * self.batch_size : (i + 1) * self.batch_size]]
            local = local_batch_slice(len(rows), process_index=index, process_count=count)
            yield self._batch(rows, w, local)

    def batches(self, key: PRNGKey, start: int = 0) -> Iterator[Batch]:
        """The batches ``start, start + 1, ...`` of the epoch that ``key`` draws.

        ``key`` is read here, once (the permutation and every batch's augmentation key
        are drawn on the host); the batches come from the prefetch thread.
        """
        n = len(self)
        order = permutation(key, n) if self.shuffle else np.arange(n)
        steps = range(start, self.num_batches)
        words = batch_words(key, steps) if self.augment != "none" else [None] * len(steps)
        return prefetch(self._host_batches(order, words, start), self.prefetch, self.device)

    def __call__(self, key: PRNGKey) -> Iterator[Batch]:
        return self.batches(key)
