"""A digest of a pytree of (possibly sharded, multi-host) arrays, computed shard by shard
without gathering any array on one host; the checkpoints' integrity check."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: a bijection of uint32 that mixes every input bit."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _words(block: np.ndarray) -> np.ndarray:
    """The array's bits as uint32 words, ``(*shape, k)`` with ``k`` words per element."""
    block = np.ascontiguousarray(block)
    size = block.dtype.itemsize
    if size < 4:
        return block.view(f"u{size}").astype(np.uint32)[..., None]
    return block.view(np.uint32).reshape(*block.shape, size // 4)


def _shard_sums(block: np.ndarray, index: tuple, shape: tuple) -> tuple[int, int]:
    r"""Two 64-bit sums over one shard's words :math:`w_p` at global positions :math:`p`:
    :math:`\sum_p f(f(p \oplus a) \oplus w_p)` and :math:`\sum_p f(f(p \oplus b) + w_p)`,
    with :math:`f` the bijection :func:`_fmix32`."""
    words = _words(block)
    k = words.shape[-1]
    strides = np.cumprod((1, *shape[::-1]))[::-1][1:] if shape else np.zeros(0, int)
    pos = np.zeros((1,) * len(shape), np.uint64)
    for axis, (sl, stride) in enumerate(zip(index, strides, strict=True)):
        start, stop, _ = sl.indices(shape[axis])
        ax = np.arange(start, stop, dtype=np.uint64) * np.uint64(stride)
        pos = pos + ax.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    pos = (pos[..., None] * np.uint64(k) + np.arange(k, dtype=np.uint64)).astype(np.uint64)
    with np.errstate(over="ignore"):
        lo = (pos & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        hi = _fmix32((pos >> np.uint64(32)).astype(np.uint32) + np.uint32(0x9E3779B9))
        a = _fmix32(_fmix32(lo ^ hi ^ np.uint32(0x2545F491)) ^ words)
        b = _fmix32(_fmix32(lo ^ hi ^ np.uint32(0x7F4A7C15)) + words)
    return int(a.sum(dtype=np.uint64)), int(b.sum(dtype=np.uint64))


def _leaf_sums(leaf: Any) -> tuple[int, int]:
    """:func:`_shard_sums` added over the first replica of every shard this process holds.

    A host value, or in a multi-process job an array of this process's devices only, is
    the same on every process (each computed it): process 0 counts it, once for the job.
    """
    shape = tuple(np.shape(leaf))
    local = not isinstance(leaf, jax.Array) or (
        jax.process_count() > 1 and leaf.is_fully_addressable
    )
    if local:
        if jax.process_index() != 0:
            return 0, 0
        return _shard_sums(np.asarray(leaf), tuple(slice(None) for _ in shape), shape)
    total = [0, 0]
    for shard in leaf.addressable_shards:
        if shard.replica_id == 0:
            a, b = _shard_sums(np.asarray(shard.data), shard.index, shape)
            total = [(total[0] + a) % 2**64, (total[1] + b) % 2**64]
    return total[0], total[1]


def tree_digest(tree: Any) -> str:
    """A digest of every leaf's path, dtype, shape and values, computed shard by shard.

    Each process reads only the shards it holds (one replica of each) and sums a mixing
    function of every 32-bit word and its global position (:func:`_shard_sums`); the
    per-leaf sums of all processes are added (integer sums: the same in any order, on
    any sharding, so a tree restored onto another mesh has the digest it was saved
    with) and hashed with the leaf's path, dtype and shape (SHA-256). Changing any one
    value changes the digest.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    sums = np.array([_leaf_sums(leaf) for _, leaf in flat], dtype=np.uint64).reshape(-1, 2)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        halves = np.stack([sums & np.uint64(0xFFFFFFFF), sums >> np.uint64(32)], -1)
        every = multihost_utils.process_allgather(halves.astype(np.uint32))
        every = every.astype(np.uint64)
        sums = (every[..., 0] + (every[..., 1] << np.uint64(32))).sum(0, dtype=np.uint64)
    digest = hashlib.sha256()
    for (path, leaf), (a, b) in zip(flat, sums.tolist(), strict=True):
        dtype = np.dtype(leaf.dtype).str
        digest.update(f"{jax.tree_util.keystr(path)}|{dtype}|{np.shape(leaf)}|{a}|{b};".encode())
    return digest.hexdigest()


def legacy_sha256(tree: Any) -> str:
    """The digest of checkpoints written before :func:`tree_digest` (host copies)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        arr = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()
