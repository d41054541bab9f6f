"""GEM and orthogonal gradient projections as optax gradient transformations.

The memory reaches the projection in one of two ways: as the keyword argument
``memory=`` of ``update`` (for loops that call ``tx.update`` themselves), or stored in
the projection's state by :func:`set_memory` between steps (for loops that call
``tx.update(grads, state, params)`` only: Flax's ``TrainState.apply_gradients``, a
library's training step). A projection that is given neither raises rather than train
unprojected.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scissorhands_jax import _qp
from scissorhands_jax._settings import EPS_HINT, MARGIN_HINT, check_real
from scissorhands_jax._types import Mask, Params

MaskOrFn = Mask | Callable[[Params], Mask] | None

_HI = jax.lax.Precision.HIGHEST


class ProjectionState(NamedTuple):
    """The projection's counters and the memory stored by :func:`set_memory`.

    Attributes:
      count: int32, steps that saw a memory.
      projected: int32, steps on which the update was changed.
      memory: the stored memory (shaped like the updates plus a leading axis t), or
        None when none has been stored.
      active: bool scalar, whether the stored memory applies to the next steps (False
        after ``set_memory(state, None)``); None until :func:`set_memory` first runs.
    """

    count: jax.Array
    projected: jax.Array
    memory: Params | None = None
    active: jax.Array | None = None


_FROM_STATE: Any = object()  # `memory` not passed: read it from the state

_NO_MEMORY = (
    "{name}: this step has no memory: neither `memory=` nor the optimiser state (set_memory) "
    "holds one, so the update would pass through unprojected. Before the projected steps "
    "call `opt_state = shs.set_memory(opt_state, memory)` (with Flax's TrainState: "
    "`state.replace(opt_state=shs.set_memory(state.opt_state, memory))`) or pass "
    "`memory=` to the update; for steps meant to run without it (retain-only steps) call "
    "set_memory(opt_state, None) or pass memory=None; or build the projection with "
    "allow_no_memory=True."
)


def _selected(tree: Any, mask: Mask | None) -> list:
    leaves = jax.tree.leaves(tree)
    if mask is None:
        return leaves
    return [x for x, m in zip(leaves, jax.tree.leaves(mask), strict=True) if m]


def _check_memory(updates: Params, memory: Params) -> int:
    u_def, m_def = jax.tree.structure(updates), jax.tree.structure(memory)
    if u_def != m_def:
        raise ValueError(
            "projection: `memory` must be a pytree with the structure of the updates and a "
            f"leading axis t per leaf; got structure {m_def} for updates {u_def}."
        )
    ts = set()
    for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(memory), strict=True):
        if m.shape[1:] != u.shape or m.ndim != u.ndim + 1:
            raise ValueError(
                f"projection: memory leaf of shape {m.shape} does not match update leaf "
                f"{u.shape}; each memory leaf must be (t, *param_shape) "
                "(see forget_memory)."
            )
        ts.add(m.shape[0])
    if len(ts) != 1 or 0 in ts:
        raise ValueError(
            f"projection: memory leaves disagree on the number of memories t: {sorted(ts)}."
        )
    return ts.pop()


def _gram(memory: list, updates: list) -> tuple[jax.Array, jax.Array]:
    """G = M M^T (t x t) and M g (t,) over the selected leaves, in float32 or wider."""
    t = memory[0].shape[0]
    dt = jnp.promote_types(memory[0].dtype, jnp.float32)
    g = jnp.zeros((t, t), dt)
    mg = jnp.zeros((t,), dt)
    for m, u in zip(memory, updates, strict=True):
        m2 = m.reshape(t, -1).astype(dt)
        g = g + jnp.matmul(m2, m2.T, precision=_HI)
        mg = mg + jnp.matmul(m2, u.reshape(-1).astype(dt), precision=_HI)
    return g, mg


def _combine(updates: Params, memory: Params, mask: Mask | None, coeff: jax.Array, apply):
    """g + sum_i coeff_i m_i on the selected leaves, chosen per leaf by ``apply``."""
    mask_leaves = jax.tree.leaves(mask) if mask is not None else None

    def one(i, u, m):
        if mask_leaves is not None and not mask_leaves[i]:
            return u
        t = m.shape[0]
        delta = jnp.matmul(coeff.astype(m.dtype), m.reshape(t, -1), precision=_HI)
        return jnp.where(apply, u + delta.reshape(u.shape).astype(u.dtype), u)

    leaves_u, treedef = jax.tree.flatten(updates)
    leaves_m = jax.tree.leaves(memory)
    return jax.tree.unflatten(
        treedef, [one(i, u, m) for i, (u, m) in enumerate(zip(leaves_u, leaves_m, strict=True))]
    )


def _resolve_mask(mask: MaskOrFn, params_or_updates: Params) -> Mask | None:
    if mask is None:
        return None
    m = mask(params_or_updates) if callable(mask) else mask
    if not any(bool(x) for x in jax.tree.leaves(m)):
        raise ValueError("projection: the leaf mask selects no leaf.")
    return m


def _project(solve: Callable, always: bool, mask: MaskOrFn, updates, state, memory):
    """The projected updates and counters of one step against ``memory``."""
    _check_memory(updates, memory)
    leaf_mask = _resolve_mask(mask, updates)
    gram, mg = _gram(_selected(memory, leaf_mask), _selected(updates, leaf_mask))
    bad_memory = ~jnp.all(jnp.isfinite(gram))
    bad_update = ~jnp.all(jnp.isfinite(mg))  # any NaN/inf in the selected updates reaches M g
    if not isinstance(bad_memory, jax.core.Tracer) and bool(bad_memory):
        raise ValueError(
            "projection: the memory holds NaN or inf (or values so large that M M^T "
            "overflows); the forget loss or its gradient is not finite at these "
            "parameters (see forget_memory)."
        )
    if not isinstance(bad_update, jax.core.Tracer) and bool(bad_update):
        raise FloatingPointError(
            "projection: the update (the step's gradient) holds NaN or inf on the projected "
            "leaves; the loss or its gradient is not finite at these parameters: lower the "
            "learning rate or the forget weight, or check the batch."
        )
    bad = bad_memory | bad_update
    conflict = jnp.any(mg < 0)
    # Inside jit a non-finite memory or update cannot raise: it makes the selected
    # leaves of the update NaN, which the training loops report, rather than a silently
    # skipped constraint or an infinite step.
    apply = (jnp.ones([], bool) if always else conflict) | bad
    coeff = jnp.where(bad, jnp.nan, solve(gram, mg))
    new_updates = _combine(updates, memory, leaf_mask, coeff, apply)
    new_state = state._replace(
        count=state.count + 1, projected=state.projected + apply.astype(jnp.int32)
    )
    return new_updates, new_state


def _projection(solve: Callable, always: bool, mask: MaskOrFn, allow_no_memory: bool, name: str):
    project = functools.partial(_project, solve, always, mask)

    def init_fn(params):
        del params
        return ProjectionState(count=jnp.zeros([], jnp.int32), projected=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, memory=_FROM_STATE, **extra_args):
        del params, extra_args
        if memory is None:  # told: this step (e.g. a retain-only step) is not projected
            return updates, state
        if memory is not _FROM_STATE:  # the argument wins over the state
            return project(updates, state, memory)
        if state.active is None:  # set_memory never ran on this state
            if allow_no_memory:
                return updates, state
            raise ValueError(_NO_MEMORY.format(name=name))
        if state.memory is None:  # cleared before any memory was stored
            return updates, state
        if not isinstance(state.active, jax.core.Tracer):
            return project(updates, state, state.memory) if bool(state.active) else (updates, state)
        return jax.lax.cond(
            state.active,
            lambda u, s: project(u, s, s.memory),
            lambda u, s: (u, s),
            updates,
            state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _leaf_selection(name: str, eligible: MaskOrFn, mask: MaskOrFn) -> MaskOrFn:
    """``eligible``, or the deprecated ``mask`` with a warning."""
    if mask is None:
        return eligible
    if eligible is not None:
        raise ValueError(
            f"{name}: pass the leaf selection once, as `eligible=` (`mask=` is its old name)."
        )
    warnings.warn(
        f"{name}(mask=...) is deprecated; pass the same tree as `eligible=` (the name every "
        "other function uses for it).",
        DeprecationWarning,
        stacklevel=3,
    )
    return mask


def gem_projection(
    margin: float = 0.5,
    eps: float = 1e-3,
    *,
    eligible: MaskOrFn = None,
    allow_no_memory: bool = False,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Projects the update so that it does not undo the memories (GEM).

    Let :math:`g` be the update and :math:`M` the memories (rows :math:`m_i`). If any
    :math:`\langle g, m_i \rangle < 0` the update becomes :math:`\tilde g = g + M^\top v`
    where :math:`v` solves the dual QP of Lopez-Paz & Ranzato (2017)

    .. math::
        \min_v \tfrac12 v^\top (M M^\top + \epsilon I) v + (M g)^\top v
        \quad \text{s.t.} \quad v \ge \text{margin},

    otherwise :math:`g` passes unchanged. For t = 1 the solution is
    :math:`v = \max(\text{margin}, -\langle g, m\rangle / (\|m\|^2 + \epsilon))`; for
    t <= 10 it is exact (enumeration of active sets, batched on the device), beyond that
    an accelerated projected-gradient solve. With Scissorhands' memories
    :math:`m_i = \nabla_\theta[-L(\theta; b_{f,i})]` a step along :math:`-\tilde g` cannot
    lower the forget loss to first order (Wu & Harandi 2024, Sec. 3.2).

    Put it first in a chain so it acts on the raw gradient, as the release does::

        optax.chain(gem_projection(), optax.add_decayed_weights(5e-4),
                    optax.sgd(lr, momentum=0.9))

    **The memory** comes either as ``update(..., memory=M)`` or from the state, stored
    there between steps by :func:`set_memory` (for loops that call
    ``tx.update(grads, state, params)`` only, such as Flax's
    ``TrainState.apply_gradients``). The argument wins over the state; ``memory=None``
    or a state cleared with ``set_memory(state, None)`` passes the update through (for
    steps without forget data). A step that has neither raises ValueError (when the
    update is traced), so a loop that never provides a memory is not trained
    unprojected by mistake, unless ``allow_no_memory=True``.

    With ``eps = 0`` :math:`M M^\top` may be singular (a zero memory, two equal ones):
    each face of the QP is then solved for its least-norm point by a pseudo-inverse,
    which gives the same update :math:`\tilde g` (it is unique even where :math:`v` is
    not).

    **Non-finite values.** A memory holding NaN or inf raises ValueError when the
    transform runs eagerly, an update holding NaN or inf on the selected leaves
    FloatingPointError; inside ``jax.jit``, where they cannot raise, either makes the
    selected leaves of the update NaN (so the loss turns NaN and the training loop stops
    with an error) instead of skipping the constraint or passing an infinite step on.
    :func:`~scissorhands_jax.forget_memory` checks the memory it builds. Steps without a
    memory pass the update through as it is.

    Args:
      margin: lower bound on the dual variables (the release's 0.5); finite, >= 0.
      eps: ridge added to :math:`M M^\top` (finite, >= 0), so a singular or zero
        memory is harmless.
      eligible: restricts the projection to some leaves: a bool tree like the params
        (e.g. :func:`~scissorhands_jax.eligible_mask`), a function of the updates
        returning one, or None for all leaves. Other leaves pass through, and their
        memory entries are never read.
      allow_no_memory: let steps without any memory pass through silently.
      mask: deprecated name of ``eligible`` (warns).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update(updates, state, params=None,
      *, memory)`` with ``memory`` shaped like the updates plus a leading axis t (or
      left out when :func:`set_memory` stored it); its state is a
      :class:`ProjectionState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import scissorhands_jax as shs
      >>> tx = shs.gem_projection(margin=0.0, eps=0.0)
      >>> g = {"w": jnp.array([1.0, 0.0])}
      >>> mem = {"w": jnp.array([[-1.0, 1.0]])}
      >>> new, _ = tx.update(g, tx.init(g), memory=mem)
      >>> new["w"].tolist()  # now orthogonal to the memory
      [0.5, 0.5]

    Raises:
      ValueError: a negative or non-finite ``margin`` or ``eps``; both ``eligible`` and
        ``mask``.
    """
    eligible = _leaf_selection("gem_projection", eligible, mask)
    try:
        margin = check_real("margin", margin, low=0.0, hint=MARGIN_HINT)
        eps = check_real("eps", eps, low=0.0, hint=EPS_HINT)
    except ValueError as err:
        raise ValueError(f"gem_projection: margin and eps must be finite and >= 0; {err}") from None

    def solve(gram, mg):
        if eps == 0:  # singular M M^T: least-norm face solutions (see _qp.solve_dual)
            return _qp.solve_dual(gram, mg, margin, singular=True)
        h = gram + eps * jnp.eye(gram.shape[0], dtype=gram.dtype)
        return _qp.solve_dual(h, mg, margin)

    return _projection(solve, False, eligible, allow_no_memory, "gem_projection")


def orthogonal_projection(
    eps: float = 1e-3,
    *,
    only_on_conflict: bool = False,
    eligible: MaskOrFn = None,
    allow_no_memory: bool = False,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Removes the component of the update that lies in the span of the memories.

    .. math::
        \tilde g = g - M^\top (M M^\top + \epsilon I)^{-1} M g

    The design-card variant beside GEM: :math:`\langle \tilde g, m_i \rangle \approx 0`
    for every memory (exactly 0 when ``eps = 0`` and the memories are independent).

    With ``eps = 0`` the solve uses the pseudo-inverse of :math:`M M^\top`, so zero or
    linearly dependent memories give the least-squares projection onto the orthogonal
    complement of their span (eigenvalues below ``10 t`` float32 epsilons of the largest
    count as zero). The memory (argument or :func:`set_memory`) and non-finite values
    are handled as in :func:`gem_projection`.

    Args:
      eps: ridge that keeps the solve well-posed for dependent or zero memories
        (finite, >= 0).
      only_on_conflict: apply only when some :math:`\langle g, m_i\rangle < 0`.
      eligible: restricts it to some leaves, as in :func:`gem_projection`.
      allow_no_memory: let steps without any memory pass through silently.
      mask: deprecated name of ``eligible`` (warns).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with the same contract as
      :func:`gem_projection`.

    Raises:
      ValueError: a negative or non-finite ``eps``; both ``eligible`` and ``mask``.
    """
    eligible = _leaf_selection("orthogonal_projection", eligible, mask)
    eps = check_real("orthogonal_projection: eps", eps, low=0.0, hint=EPS_HINT)

    def solve(gram, mg):
        if eps == 0:  # the least-squares projection, for dependent or zero memories too
            return -jnp.matmul(jnp.linalg.pinv(gram, hermitian=True), mg, precision=_HI)
        h = gram + eps * jnp.eye(gram.shape[0], dtype=gram.dtype)
        return -jnp.linalg.solve(h, mg)

    return _projection(
        solve, not only_on_conflict, eligible, allow_no_memory, "orthogonal_projection"
    )
