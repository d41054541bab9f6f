"""The forget memory that the projection protects: gradients of the negated forget loss."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._saliency import as_partial, loss_and_grad
from scissorhands_jax._settings import check_bool
from scissorhands_jax._types import Batch, LossFn, Mask, Params
from scissorhands_jax.parallel import mesh_of, on_mesh, shard_batch


def forget_memory(
    loss_fn: LossFn,
    params: Params,
    batches: Iterable[Batch],
    *,
    eligible: Mask | None = None,
    cumulative: bool = False,
) -> Params:
    r"""Stacks the gradients of the negated forget loss, one per batch.

    .. math::
        m_i = \nabla_\theta \left[ -L(\theta; b_{f,i}) \right], \qquad i = 1..t

    restricted to the eligible leaves (others are zero). The result is what
    :func:`gem_projection` takes as ``memory``. Call it with the model in evaluation
    mode (through the closure of ``loss_fn``), as the release does.

    With ``cumulative=True`` row i is the running sum
    :math:`m_i = \sum_{j \le i} \nabla[-L(\theta; b_{f,j})]`: the release never zeroes
    the gradients between its memory batches, so for ``t > 1`` its rows add up this way
    (for ``t = 1`` both are the same).

    It runs eagerly (it checks every loss and every memory row for NaN/inf, so that a
    projection never sees a non-finite memory) and also inside ``jax.jit``, where the
    checks are left out; ``eligible`` must then be a tree of Python bools (it
    decides which leaves are kept, so it cannot be traced).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the current (trimmed) parameters.
      batches: ``memory_num`` forget batches; split over the data axis of the mesh
        ``params`` live on, if any (:func:`scissorhands_jax.parallel.mesh_of`).
      eligible: bool-per-leaf tree (see :func:`eligible_mask`); None keeps every leaf.
      cumulative: release-parity running sums (see above); default: one clean
        gradient per row.

    Returns:
      A pytree shaped like ``params`` whose leaves have a leading axis ``t``.

    Raises:
      ValueError: if ``batches`` is empty, ``eligible`` holds traced values or
        ``cumulative`` is not a bool (a string such as ``"no"`` would read as True).
      FloatingPointError: if a forget loss or a memory row is not finite (outside jit).
    """
    cumulative = check_bool("forget_memory: cumulative", cumulative)
    keep = None
    if eligible is not None:
        flags = jax.tree.leaves(eligible)
        if any(isinstance(e, jax.core.Tracer) for e in flags):
            raise ValueError(
                "forget_memory: `eligible` must hold Python bools (or concrete arrays), not "
                "traced values; close over it instead of passing it to the jitted function, "
                "or call forget_memory outside jax.jit."
            )
        keep = tuple(bool(e) for e in flags)
    loss_fn = as_partial(loss_fn)
    mesh = mesh_of(params)
    if mesh is not None:  # the arrays the loss closes over join the parameters
        loss_fn = on_mesh(loss_fn, mesh)
    grads = []
    for i, batch in enumerate(batches):
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        loss, g = loss_and_grad(loss_fn, params, batch)
        if not isinstance(loss, jax.core.Tracer) and not np.isfinite(float(loss)):
            raise FloatingPointError(
                f"forget_memory: the loss of forget batch {i} is {float(loss)}; the model "
                "produces non-finite values."
            )
        grads.append(g)
    if not grads:
        raise ValueError("forget_memory: `batches` is empty; pass at least one forget batch.")
    memory = _stack_memories(grads, cumulative, keep)
    finite = _finite_rows(memory)
    if not isinstance(finite, jax.core.Tracer) and not np.all(finite):
        raise FloatingPointError(
            f"forget_memory: the gradient of forget batch {int(np.argmin(finite))} holds NaN "
            "or inf although its loss is finite; the model's gradient is not finite at "
            "these parameters (check for operations such as sqrt or log at 0)."
        )
    return memory


@jax.jit
def _finite_rows(memory):
    """Per memory row: whether all its entries are finite."""
    rows = [
        jnp.all(jnp.isfinite(m.reshape(m.shape[0], -1)), axis=1) for m in jax.tree.leaves(memory)
    ]
    return functools.reduce(jnp.logical_and, rows)


@functools.partial(jax.jit, static_argnames=("cumulative", "keep"))
def _stack_memories(grads, cumulative, keep):
    """Memories -g_i (or their running sums), stacked on a new leading axis, with the
    leaves outside ``keep`` zeroed."""
    memory = jax.tree.map(lambda *gs: -jnp.stack(gs), *grads)
    if cumulative:
        memory = jax.tree.map(lambda m: jnp.cumsum(m, axis=0), memory)
    if keep is None:
        return memory
    leaves, treedef = jax.tree.flatten(memory)
    return treedef.unflatten(
        [m if k else jnp.zeros_like(m) for m, k in zip(leaves, keep, strict=True)]
    )
