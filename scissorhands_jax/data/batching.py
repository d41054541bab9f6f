"""Deterministic, seedable batching of in-memory arrays."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from scissorhands_jax._types import Batch, BatchSource, PRNGKey


def permutation(key: PRNGKey, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` that is a pure function of ``key``.

    Drawn on the host by NumPy's PCG64 seeded with the key's bits: no device program
    per data-set size, and the same key gives the same order on every host.
    """
    data = np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel()
    return np.random.default_rng(data.tolist()).permutation(n)


@dataclass(frozen=True)
class ArraySource:
    """One epoch of batches of an in-memory dataset, shuffled by a key.

    Calling it with a key yields the batches of one epoch: a permutation drawn from the
    key (see :func:`permutation`: the same key gives the same order on any host),
    cut into ``batch_size`` slices; the last one is smaller unless ``drop_last``.

    Attributes:
      arrays: a pytree of NumPy arrays sharing the leading example axis.
      batch_size: examples per batch.
      shuffle: draw a permutation per epoch (else keep the stored order).
      drop_last: drop the final short batch.
    """

    arrays: Any
    batch_size: int
    shuffle: bool = True
    drop_last: bool = False

    def __post_init__(self):
        sizes = {np.shape(x)[0] for x in jax.tree.leaves(self.arrays)}
        if len(sizes) != 1:
            raise ValueError(f"array_source: leaves disagree on the example count: {sizes}.")
        if self.batch_size < 1:
            raise ValueError(f"array_source: batch_size must be >= 1, got {self.batch_size}.")

    def __len__(self) -> int:
        """The number of examples."""
        return int(np.shape(jax.tree.leaves(self.arrays)[0])[0])

    @property
    def num_batches(self) -> int:
        """Batches per epoch."""
        n, b = len(self), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __call__(self, key: PRNGKey) -> Iterator[Batch]:
        n = len(self)
        order = permutation(key, n) if self.shuffle else np.arange(n)
        for i in range(self.num_batches):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield jax.tree.map(lambda x, idx=idx: x[idx], self.arrays)


def array_source(
    arrays: Any, batch_size: int, *, shuffle: bool = True, drop_last: bool = False
) -> ArraySource:
    """Wraps a pytree of arrays as a :data:`BatchSource` (see :class:`ArraySource`)."""
    return ArraySource(jax.tree.map(np.asarray, arrays), batch_size, shuffle, drop_last)


def first_batch(source: BatchSource, key: PRNGKey) -> Batch:
    """The first batch of the epoch that ``key`` draws: a fresh shuffled batch per key."""
    for batch in source(key):
        return batch
    raise ValueError("the data source yielded no batch: is the data set empty?")
