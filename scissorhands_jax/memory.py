"""The forget memory that the projection protects: gradients of the negated forget loss."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Batch, LossFn, Mask, Params
from scissorhands_jax.parallel import on_mesh, shard_batch
from scissorhands_jax.saliency import as_partial, loss_and_grad


def forget_memory(
    loss_fn: LossFn,
    params: Params,
    batches: Iterable[Batch],
    *,
    eligible: Mask | None = None,
    accumulate: bool = False,
    stale: Params | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Params:
    r"""Stacks the gradients of the negated forget loss, one per batch.

    .. math::
        m_i = \nabla_\theta \left[ -L(\theta; b_{f,i}) \right], \qquad i = 1..t

    restricted to the eligible leaves (others are zero). The result is what
    :func:`gem_projection` takes as ``memory``. Call it with the model in evaluation
    mode (through the closure of ``loss_fn``), as the release does.

    The release never clears the copied model's gradient buffer before these backward
    passes, so its memories carry a stale gradient and add up onto each other. With
    ``accumulate=True`` this is reproduced:
    :math:`m_i = \text{stale} + \sum_{j \le i} \nabla[-L(b_{f,j})]`.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the current (trimmed) parameters.
      batches: ``memory_num`` forget batches.
      eligible: bool-per-leaf tree (see :func:`eligible_mask`); None keeps every leaf.
      accumulate: release-parity accumulation (see above); default: clean memories.
      stale: the stale gradient tree added under ``accumulate`` (None: zero).
      mesh: compute data-parallel on this mesh (see
        :func:`scissorhands_jax.parallel.data_mesh`): each batch is split over its data
        axis, the other arrays replicated unless already on it.

    Returns:
      A pytree shaped like ``params`` whose leaves have a leading axis ``t``.

    Raises:
      ValueError: if ``batches`` is empty, or ``stale`` is given without ``accumulate``.
      FloatingPointError: if a forget loss is not finite.
    """
    if stale is not None and not accumulate:
        raise ValueError("forget_memory: `stale` only has a meaning with accumulate=True.")
    loss_fn = as_partial(loss_fn)
    if mesh is not None:
        loss_fn, params, stale = (on_mesh(t, mesh) for t in (loss_fn, params, stale))
    grads = []
    for i, batch in enumerate(batches):
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        loss, g = loss_and_grad(loss_fn, params, batch)
        if not np.isfinite(float(loss)):
            raise FloatingPointError(
                f"forget_memory: the loss of forget batch {i} is {float(loss)}; the model "
                "produces non-finite values."
            )
        grads.append(g)
    if not grads:
        raise ValueError("forget_memory: `batches` is empty; pass at least one forget batch.")
    keep = None if eligible is None else tuple(bool(e) for e in jax.tree.leaves(eligible))
    return _stack_memories(grads, stale, accumulate, keep)


@functools.partial(jax.jit, static_argnames=("accumulate", "keep"))
def _stack_memories(grads, stale, accumulate, keep):
    """Memories -g_i (or their running sum on top of ``stale``), stacked on a new
    leading axis, with the leaves outside ``keep`` zeroed."""
    memories, running = [], stale
    for g in grads:
        neg = jax.tree.map(jnp.negative, g)
        if accumulate:
            running = neg if running is None else jax.tree.map(jnp.add, running, neg)
            neg = running
        memories.append(neg)
    memory = jax.tree.map(lambda *ms: jnp.stack(ms), *memories)
    if keep is None:
        return memory
    leaves, treedef = jax.tree.flatten(memory)
    return treedef.unflatten(
        [m if k else jnp.zeros_like(m) for m, k in zip(leaves, keep, strict=True)]
    )
