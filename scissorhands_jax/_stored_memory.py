"""The memory stored in an optimiser state, for loops that call ``tx.update(grads,
state, params)`` without extra arguments (Flax's ``TrainState.apply_gradients``, a
library's training step): :func:`set_memory` stores it, :func:`projection_state` reads
the projection's counters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from scissorhands_jax._projection import ProjectionState
from scissorhands_jax._types import Params

_NOT_FOUND = (
    "{name}: `opt_state` holds no ProjectionState; pass the state of an optimiser built "
    "with the projection in it, e.g. tx = optax.chain(shs.gem_projection(...), optax.sgd(...)) "
    "and tx.init(params) (with Flax's TrainState: state.opt_state)."
)


def _is_state(node: Any) -> bool:
    return isinstance(node, ProjectionState)


def _check_stored(memory: Params) -> Params:
    leaves = jax.tree.leaves(memory)
    if not leaves or any(not hasattr(x, "shape") for x in leaves):
        raise ValueError(
            "set_memory: `memory` must be a tree of arrays shaped like the parameters with a "
            "leading axis t (what forget_memory returns), or None to clear it; got "
            f"{type(memory).__name__}."
        )
    ts = {x.shape[0] if x.ndim else None for x in leaves}
    if len(ts) != 1 or None in ts or 0 in ts:
        raise ValueError(
            "set_memory: every memory leaf needs the same leading axis t >= 1 (one row per "
            f"forget batch); got leading sizes {sorted(map(str, ts))}."
        )
    return jax.tree.map(jnp.asarray, memory)


def set_memory(opt_state: optax.OptState, memory: Params | None) -> optax.OptState:
    """Stores the memory in the projection's state, so that plain ``tx.update(grads,
    state, params)`` calls project against it.

    For loops that cannot pass ``memory=`` to ``update``: Flax's
    ``TrainState.apply_gradients``, a library's training step. The projection's state
    is found anywhere inside ``opt_state`` (an ``optax.chain``, ``optax.masked``,
    ``optax.inject_hyperparams``, ...). ``None`` clears it for retain-only steps (the
    stored memory is kept but unused, so the state's structure does not change).

    The state holds no memory before the first call, so a jitted step traced before
    it is traced once more after it; with the memory set before the first step (and
    every later memory of the same shape) it is traced once.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import scissorhands_jax as shs
      >>> tx = optax.chain(shs.gem_projection(margin=0.0, eps=0.0), optax.sgd(1.0))
      >>> g = {"w": jnp.array([1.0, 0.0])}
      >>> state = shs.set_memory(tx.init(g), {"w": jnp.array([[-1.0, 1.0]])})
      >>> updates, state = tx.update(g, state)  # no memory= argument
      >>> updates["w"].tolist(), int(shs.projection_state(state).projected)
      ([-0.5, -0.5], 1)

    Args:
      opt_state: an optimiser state holding one or more :class:`ProjectionState`.
      memory: the memory (:func:`~scissorhands_jax.forget_memory`), or None to turn
        the projection off until the next call.

    Returns:
      A new optimiser state; ``opt_state`` itself is not changed.

    Raises:
      ValueError: ``opt_state`` holds no projection state, or ``memory`` is not a tree
        of arrays with one leading axis t >= 1.
    """
    if memory is not None:
        memory = _check_stored(memory)
    found = []

    def store(node):
        if not _is_state(node):
            return node
        found.append(node)
        if memory is None:
            return node._replace(active=jnp.zeros([], bool))
        return node._replace(memory=memory, active=jnp.ones([], bool))

    new_state = jax.tree.map(store, opt_state, is_leaf=_is_state)
    if not found:
        raise ValueError(_NOT_FOUND.format(name="set_memory"))
    return new_state


def projection_state(opt_state: optax.OptState) -> ProjectionState:
    """The :class:`ProjectionState` inside an optimiser state (a chain, a masked or
    injected transform's state, ...), e.g. to read how many steps were projected:
    ``projection_state(state.opt_state).projected``.

    Raises:
      ValueError: ``opt_state`` holds no projection state, or more than one.
    """
    found = [
        x for x in jax.tree.leaves(opt_state, is_leaf=_is_state) if isinstance(x, ProjectionState)
    ]
    if len(found) != 1:
        raise ValueError(
            _NOT_FOUND.format(name="projection_state")
            if not found
            else f"projection_state: opt_state holds {len(found)} projection states; "
            "read them with jax.tree.leaves(opt_state, is_leaf=...) instead."
        )
    return found[0]
