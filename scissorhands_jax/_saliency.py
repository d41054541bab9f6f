"""Connection sensitivity (phase 1 of Scissorhands) and the global top-k threshold."""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scissorhands_jax._settings import TIES, check_choice, check_sparsity
from scissorhands_jax._types import Batch, LossFn, Mask, Params
from scissorhands_jax.parallel import mesh_of, on_mesh, shard_batch


def as_partial(loss_fn: LossFn) -> Partial:
    """Wraps ``loss_fn`` as a ``jax.tree_util.Partial``, a pytree that jit takes as an
    argument: the function is part of the compiled program's key (by identity), the
    arrays it closes over (a ``Partial``'s arguments) are ordinary inputs."""
    return loss_fn if isinstance(loss_fn, Partial) else Partial(loss_fn)


@jax.jit
def loss_and_grad(loss_fn: Partial, params: Params, batch: Batch):
    """``(loss, grad)`` of ``loss_fn`` (a ``Partial``, see :func:`as_partial`), compiled
    once per loss and shapes and shared by the saliency and the memory passes."""
    return jax.value_and_grad(loss_fn)(params, batch)


@jax.jit
def _abs(grads):
    return jax.tree.map(jnp.abs, grads)


@jax.jit
def _add_abs(acc, grads):
    return jax.tree.map(lambda a, g: a + jnp.abs(g), acc, grads)


@jax.jit
def _times_params(params, acc):
    return jax.tree.map(lambda p, a: jnp.abs(p * a), params, acc)


def connection_sensitivity(
    loss_fn: LossFn,
    params: Params,
    batches: Iterable[Batch],
) -> Params:
    r"""Scores every parameter by its connection sensitivity to the forget data.

    .. math::
        s = \left| \theta \odot \sum_b \left| \nabla_\theta L(\theta; b) \right| \right|

    with :math:`\theta` = ``params``, :math:`L` = ``loss_fn`` and :math:`b` running over
    ``batches`` (Wu & Harandi 2024, Eq. 2; SNIP, Lee et al. 2019). Gradients are summed
    in absolute value batch by batch, then multiplied by the parameters.

    A model with state (BatchNorm statistics, dropout) enters through the closure of
    ``loss_fn``: ``lambda p, b: model_loss(p, batch_stats, b, train=False)[0]``. The
    per-batch step is jit-compiled and cached on ``loss_fn``, so pass the same function
    object (or a ``jax.tree_util.Partial`` over the arrays it needs) to reuse the compiled
    program.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` task loss (cross-entropy for a
        classifier, noise-prediction MSE for diffusion).
      params: the trained parameters, any pytree of float arrays.
      batches: an iterable of batches of the forget set (``prune_num`` of them). When
        ``params`` live on a mesh (:func:`scissorhands_jax.parallel.on_mesh`), each
        batch is split over its data axis (:func:`scissorhands_jax.parallel.mesh_of`).

    Returns:
      A pytree shaped like ``params`` with the non-negative saliency of every entry.

    Raises:
      ValueError: if ``batches`` is empty.
      FloatingPointError: if the loss of a batch is not finite.

    Example:
      >>> import jax.numpy as jnp
      >>> import scissorhands_jax as shs
      >>> loss = lambda p, b: jnp.sum((b["x"] @ p["w"]) ** 2)
      >>> s = shs.connection_sensitivity(loss, {"w": jnp.ones((2, 1))},
      ...                                [{"x": jnp.array([[1.0, 2.0]])}])
      >>> s["w"].ravel().tolist()
      [6.0, 12.0]
    """
    loss_fn = as_partial(loss_fn)
    mesh = mesh_of(params)
    if mesh is not None:  # the arrays the loss closes over join the parameters
        loss_fn = on_mesh(loss_fn, mesh)
    acc = None
    n = 0
    for batch in batches:
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        loss, grads = loss_and_grad(loss_fn, params, batch)
        acc = _abs(grads) if acc is None else _add_abs(acc, grads)
        if not np.isfinite(float(loss)):
            raise FloatingPointError(
                f"connection_sensitivity: the loss of forget batch {n} is {float(loss)}; "
                "check the model parameters and the batch for NaN/inf values."
            )
        n += 1
    if acc is None:
        raise ValueError(
            "connection_sensitivity: `batches` is empty; pass at least one batch of the "
            "forget set (is the forget set empty?)."
        )
    return _times_params(params, acc)


def _sortable_keys(x: jax.Array) -> jax.Array:
    """Maps float32 values to uint32 keys whose unsigned order is the float order."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    sign = bits >> 31
    return jnp.where(sign == 1, ~bits, bits | jnp.uint32(0x80000000))


def _key_to_float(key: jax.Array) -> jax.Array:
    bits = jnp.where(key >> 31 == 1, key & jnp.uint32(0x7FFFFFFF), ~key)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def kth_smallest(scores: Params, k: int) -> jax.Array:
    """Exact k-th smallest entry (1-based) of all leaves of ``scores`` together.

    Runs a 32-step bisection over the order-preserving integer image of float32, each
    step counting per leaf how many entries lie at or below the candidate. It never
    concatenates or sorts the leaves, and leaves of more than :data:`COUNT_CHUNK`
    entries are counted chunk by chunk, so the working memory is a few chunks whatever
    the model size (no copy of the scores); the result equals
    ``np.sort(np.concatenate(leaves))[k - 1]`` exactly.

    Args:
      scores: pytree of float arrays (float32 or narrower; wider values are rounded to
        float32 first).
      k: rank, ``1 <= k <= total number of entries``.

    Returns:
      The k-th smallest value as a float32 scalar.

    Raises:
      ValueError: if k is not in ``1..N``.
    """
    n = sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(scores))
    if not isinstance(k, numbers.Integral) or not 1 <= k <= n:
        raise ValueError(f"kth_smallest: k must be an integer in 1..{n}, got {k!r}.")
    return _kth_smallest(scores, int(k), _chunkable(scores))


COUNT_CHUNK = 1 << 20
"""Leaves larger than this are counted in chunks of this many entries by
:func:`kth_smallest` (the working memory of the device top-k)."""


def _chunkable(scores: Params) -> tuple[bool, ...]:
    """Per non-empty leaf: whether every device holds all of it (one device, or
    replicated). A leaf split over devices is counted whole, shard by shard: slicing
    it into chunks would make the partitioner gather it onto every device."""
    return tuple(
        getattr(getattr(leaf, "sharding", None), "is_fully_replicated", True)
        for leaf in jax.tree.leaves(scores)
        if math.prod(np.shape(leaf))
    )


def _count_le(leaf: jax.Array, bound: jax.Array, chunk: bool) -> jax.Array:
    """How many entries of ``leaf`` have a sortable key <= ``bound``.

    The optimisation barrier ties the leaf to the loop-varying bound, so XLA cannot
    hoist the keys (a uint32 copy of every leaf) out of the bisection loop; with
    ``chunk``, large leaves are counted in fixed chunks, so a backend that materialises
    the comparison before summing (XLA:CPU does) holds one chunk of it at a time.
    """
    leaf, bound = jax.lax.optimization_barrier((leaf, bound))

    def count(x):
        return jnp.sum(_sortable_keys(x) <= bound, dtype=jnp.int32)

    if not chunk or leaf.size <= COUNT_CHUNK:
        return count(leaf)
    flat = leaf.ravel()
    full, tail = divmod(flat.shape[0], COUNT_CHUNK)
    total = jax.lax.fori_loop(
        0,
        full,
        lambda i, acc: (
            acc + count(jax.lax.dynamic_slice_in_dim(flat, i * COUNT_CHUNK, COUNT_CHUNK))
        ),
        jnp.int32(0),
    )
    return total + count(flat[full * COUNT_CHUNK :]) if tail else total


@functools.partial(jax.jit, static_argnames=("k", "chunkable"))
def _kth_smallest(scores: Params, k: int, chunkable: tuple[bool, ...]) -> jax.Array:
    leaves = [leaf for leaf in jax.tree.leaves(scores) if leaf.size]

    def body(i, lo_hi):
        lo, hi = lo_hi  # invariant: count(<= hi) >= k, and the answer lies in [lo, hi]
        mid = lo + (hi - lo) // 2
        counts = [_count_le(x, mid, c) for x, c in zip(leaves, chunkable, strict=True)]
        enough = sum(counts) >= k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, hi = jnp.uint32(0), jnp.uint32(0xFFFFFFFF)
    lo, hi = jax.lax.fori_loop(0, 32, body, (lo, hi))
    return _key_to_float(hi)


@functools.partial(jax.jit, static_argnames=("k", "chunkable"))
def _stats_and_kth(scores, k, chunkable):
    leaves = [leaf.astype(jnp.float32) for leaf in jax.tree.leaves(scores) if leaf.size]
    lo = jnp.min(jnp.stack([jnp.min(leaf) for leaf in leaves]))
    hi = jnp.max(jnp.stack([jnp.max(leaf) for leaf in leaves]))
    finite = jnp.isfinite(lo) & jnp.isfinite(hi)  # min and max propagate NaN
    return lo, hi, finite, _kth_smallest(scores, k, chunkable)


HOST_MAX_ENTRIES = 1 << 22
"""With ``method="auto"``, up to this many scores are ranked on the host by
``np.partition`` (no program to compile); more are ranked on the device by
:func:`kth_smallest`. Both are exact."""


def _host_stats_and_kth(scores, k):
    flat = np.concatenate(
        [np.ravel(np.asarray(x, np.float32)) for x in jax.device_get(jax.tree.leaves(scores))]
    )
    finite = bool(np.all(np.isfinite(flat)))
    kth = np.partition(flat, k - 1)[k - 1] if finite else np.float32(np.nan)
    return flat.min(), flat.max(), finite, np.float32(kth)


def _rank(scores: Params, sparsity: float, method: str):
    r"""``(n, k, lo, hi, kth, on_host)``: the entry count, the rank
    :math:`k = \lfloor\text{sparsity}\cdot N\rfloor`, the smallest and largest score
    and the k-th smallest, after checking the scores and the settings."""
    sparsity = check_sparsity(sparsity)
    leaves = jax.tree.leaves(scores)
    n = sum(math.prod(np.shape(leaf)) for leaf in leaves)
    if n == 0:
        raise ValueError("top_k_mask: `scores` has no entries.")
    if n >= 2**31:
        raise ValueError(f"top_k_mask: {n} entries exceed the int32 counter; shard the scores.")
    k = math.floor(sparsity * n)
    if k < 1:
        raise ValueError(
            f"floor(sparsity * N) = floor({sparsity} * {n}) = 0: the threshold is undefined; "
            "raise the sparsity or score more parameters."
        )
    if method not in ("auto", "device", "host"):
        raise ValueError(f"method must be 'auto', 'device' or 'host', got {method!r}.")
    # Scores spread over several processes are never gathered to one host.
    local = all(getattr(leaf, "is_fully_addressable", True) for leaf in leaves)
    on_host = method == "host" or (method == "auto" and n <= HOST_MAX_ENTRIES and local)
    if on_host:
        lo, hi, finite, kth = _host_stats_and_kth(scores, k)
    else:
        lo, hi, finite, kth = _stats_and_kth(scores, k, _chunkable(scores))
    if not bool(finite):
        raise ValueError(
            "top_k_mask: the scores contain NaN or inf; the saliency pass saw a non-finite "
            "gradient or parameter."
        )
    return n, k, lo, hi, kth, on_host


def top_k_threshold(scores: Params, sparsity: float, *, method: str = "auto") -> jax.Array:
    r"""The global saliency threshold :math:`\tau` of Scissorhands.

    :math:`\tau` is the k-th smallest score over all entries of all leaves with
    :math:`k = \lfloor \text{sparsity} \cdot N \rfloor`. As in the authors' release, when
    :math:`\tau` equals the largest or the smallest score it falls back to
    :math:`(\max - \min) / 2` (the release compares within an absolute 1e-12, which
    misfires on scores of that scale; float32 scores are compared exactly here).

    Args:
      scores: pytree of saliency scores (see :func:`connection_sensitivity`).
      sparsity: fraction of entries left untouched, in the open interval (0, 1).
      method: ``"device"`` (:func:`kth_smallest`, no copy of the scores), ``"host"``
        (``np.partition`` on a host copy), or ``"auto"``: host up to
        :data:`HOST_MAX_ENTRIES` entries, device beyond (and always on the device when
        the scores span several processes). On the device the count runs where the
        scores live: a leaf split over devices is counted shard by shard and the counts
        summed, never gathered.

    Returns:
      The threshold as a float32 scalar.

    Raises:
      ValueError: for a sparsity outside (0, 1), empty scores, non-finite scores, or
        ``floor(sparsity * N) == 0``.
    """
    _, _, lo, hi, kth, _ = _rank(scores, sparsity, method)
    return jnp.float32((hi - lo) / 2.0 if _falls_back(kth, lo, hi) else kth)


def _falls_back(kth, lo, hi) -> bool:
    """Whether the release's threshold is the midpoint: the k-th score is the max or min."""
    return bool(kth == hi or kth == lo)


def top_k_mask(
    scores: Params, sparsity: float, *, method: str = "auto", ties: str = "release"
) -> Mask:
    r"""Selects the most salient entries: the global top (1 - sparsity) fraction.

    .. math::
        m = [\, s > \tau \,], \qquad \tau = s_{(\lfloor \text{sparsity} \cdot N \rfloor)}

    where :math:`s_{(k)}` is the k-th smallest of all :math:`N` entries of ``scores``
    ranked together (one global ranking across leaves), with the release's fallback
    :math:`\tau = (\max - \min)/2` when :math:`\tau` hits the max or the min (see
    :func:`top_k_threshold`). Ties at :math:`\tau` are not selected, so without the
    fallback at most :math:`N - k` entries are; with it, any number can be (every entry
    of a tree of equal scores), and a warning says so whenever the count differs from
    :math:`N - k`. Exact for any size up to 2**31 entries; it counts per leaf instead
    of sorting a concatenated copy.

    With ``ties="exact"`` exactly :math:`N - k` entries are selected: the entries
    ranked by score, equal scores by position (leaf order, then row-major within a
    leaf; the later ranks higher), and the top :math:`N - k` taken, i.e. the last
    :math:`N - k` of a stable sort. On scores without ties at :math:`s_{(k)}` (and
    :math:`s_{(k)}` not the minimum) it is the release's selection.

    Args:
      scores: pytree of saliency scores.
      sparsity: fraction kept, in (0, 1); 0.97 selects the top 3 %.
      method: where the threshold is ranked (see :func:`top_k_threshold`).
      ties: ``"release"`` (the rule above, the release's) or ``"exact"``
        (:data:`~scissorhands_jax._settings.TIES`; :func:`~scissorhands_jax.trim`'s
        default).

    Returns:
      A boolean pytree shaped like ``scores``; True marks an entry to re-initialise.

    Raises:
      ValueError: see :func:`top_k_threshold`; an unknown ``ties``.

    Example:
      >>> import jax.numpy as jnp
      >>> import scissorhands_jax as shs
      >>> m = shs.top_k_mask({"a": jnp.arange(10.0)}, 0.8)
      >>> m["a"].tolist()
      [False, False, False, False, False, False, False, False, True, True]
      >>> tied = {"a": jnp.ones(10)}  # the release re-initialises all ten (and warns)
      >>> shs.top_k_mask(tied, 0.8, ties="exact")["a"].tolist()
      [False, False, False, False, False, False, False, False, True, True]
    """
    check_choice("ties", ties, TIES)
    n, k, lo, hi, kth, on_host = _rank(scores, sparsity, method)
    if ties == "exact":
        below, at_most = _counts_at(scores, kth, on_host)
        if at_most == k:  # no surplus tie at s_(k): [s > s_(k)] is exactly N - k entries
            return _greater(scores, jnp.float32(kth))
        return _exact_mask(scores, jnp.float32(kth), jnp.int32(k - below))
    fallback = _falls_back(kth, lo, hi)
    mask = _greater(scores, jnp.float32((hi - lo) / 2.0 if fallback else kth))
    if fallback:
        chosen = int(sum(jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(mask)))
        if chosen != n - k:
            warnings.warn(
                f"top_k_mask: the scores tie at the threshold and the release's fallback "
                f"(max - min) / 2 selects {chosen} of {n} entries where sparsity "
                f"{float(sparsity)} asks for {n - k} ({'more' if chosen > n - k else 'fewer'}"
                "); ties='exact' (TrimSettings(ties='exact'), the default) selects exactly "
                f"{n - k}.",
                stacklevel=2,
            )
    return mask


@jax.jit
def _greater(scores: Params, tau: jax.Array) -> Mask:
    return jax.tree.map(lambda s: s.astype(jnp.float32) > tau, scores)


def _counts_at(scores: Params, kth, on_host: bool) -> tuple[int, int]:
    """How many scores lie below ``kth`` and at or below it."""
    if on_host:
        flat = np.concatenate(
            [np.ravel(np.asarray(x, np.float32)) for x in jax.device_get(jax.tree.leaves(scores))]
        )
        return int(np.sum(flat < kth)), int(np.sum(flat <= kth))
    below, at_most = _device_counts_at(scores, jnp.float32(kth), _chunkable(scores))
    return int(below), int(at_most)


@functools.partial(jax.jit, static_argnames="chunkable")
def _device_counts_at(scores, kth, chunkable):
    leaves = [leaf for leaf in jax.tree.leaves(scores) if leaf.size]
    key = _sortable_keys(kth)  # a finite score's key is > 0, so key - 1 is "below"
    below = sum(_count_le(x, key - 1, c) for x, c in zip(leaves, chunkable, strict=True))
    at_most = sum(_count_le(x, key, c) for x, c in zip(leaves, chunkable, strict=True))
    return below, at_most


@jax.jit
def _exact_mask(scores: Params, tau: jax.Array, skip: jax.Array) -> Mask:
    """``[s > tau]`` plus the entries equal to ``tau`` after the first ``skip`` of them
    in leaf order, row-major within a leaf (the ties that rank higher)."""
    leaves, treedef = jax.tree.flatten(scores)
    offset = jnp.int32(0)
    out = []
    for leaf in leaves:
        s = leaf.astype(jnp.float32)
        tie = s == tau
        index = offset + jnp.cumsum(tie.ravel(), dtype=jnp.int32).reshape(s.shape) - 1
        out.append((s > tau) | (tie & (index >= skip)))
        offset = offset + jnp.sum(tie, dtype=jnp.int32)
    return jax.tree.unflatten(treedef, out)
