"""Step-based training on a weighted retain / forget objective, with Adam's direction.

One jitted step serves a diffusion model's training (retain term only), Scissorhands'
diffusion repair (:math:`L_r - \\lambda L_f` or :math:`L_r + \\lambda L_{anchor}`) and
the diffusion baselines (fine-tuning, SalUn's :math:`L_{anchor} + \\alpha L_r` with an
elementwise gradient mask), with an optional forget-memory projection chained in front
of Adam. The steps run in the one loop of :func:`scissorhands_jax._loop.run_steps`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scissorhands_jax._loop import TrainState, cycle, private_copy, run_steps
from scissorhands_jax._repair import projection_tx
from scissorhands_jax._settings import ProjectionSettings, check_int, check_real
from scissorhands_jax._types import Batch, BatchSource, Mask, ModelLossFn, Params, PRNGKey
from scissorhands_jax.parallel import mesh_of, shard_batch


def adam_tx(
    grad_clip: float | None = None,
    projection: ProjectionSettings | None = None,
    eligible: Mask | None = None,
) -> optax.GradientTransformation:
    """``[projection] -> [clip_by_global_norm] -> scale_by_adam()``: Adam's update
    direction; the step (:func:`objective_step`) multiplies it by ``-lr``, so the
    learning rate is a traced input of the run's one compiled step.

    The projection (on the ``eligible`` leaves) acts on the raw gradient, before
    clipping and Adam, as the release projects before its optimiser step.
    """
    parts = []
    if projection is not None and projection.projection != "none":
        parts.append(projection_tx(projection, eligible))
    if grad_clip is not None:
        parts.append(optax.clip_by_global_norm(grad_clip))
    parts.append(optax.scale_by_adam())
    return optax.chain(*parts)


class ObjectiveScalars(NamedTuple):
    """The per-step numbers of :func:`objective_step`, traced inputs of its program.

    Attributes:
      w_retain: :math:`w_r`, the weight of the retain loss.
      w_forget: :math:`w_f`, the weight of the forget loss.
      lr: the learning rate that scales ``tx``'s direction.
    """

    w_retain: jax.Array
    w_forget: jax.Array
    lr: jax.Array


def _objective_update(loss, tx, sign, params, opt_state, b_r, b_f, scalars, memory, grad_mask):
    w_r, w_f, lr = scalars

    def objective(p):
        l_r = loss(p, {}, b_r, True)[0]
        if b_f is None:
            return w_r * l_r, (l_r, jnp.zeros_like(l_r))
        l_f = loss(p, {}, b_f, False)[0]
        return w_r * l_r + sign * w_f * l_f, (l_r, l_f)

    (_, (l_r, l_f)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    if grad_mask is not None:
        grads = jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros_like(g)), grads, grad_mask)
    updates, opt_state = tx.update(grads, opt_state, params, memory=memory)
    updates = jax.tree.map(lambda u: -lr * u, updates)
    return optax.apply_updates(params, updates), opt_state, l_r, l_f


def objective_step(loss: ModelLossFn, tx: optax.GradientTransformation, *, sign: float = -1.0):
    r"""The step of one run on :math:`w_r L(\theta; b_r) + \text{sign} \cdot w_f
    L(\theta; b_f)`, :math:`\theta \leftarrow \theta - \text{lr} \cdot \text{tx}(g)`,
    compiled once for the run (``loss``, ``tx`` and ``sign`` are bound before
    ``jax.jit``).

    The retain term runs in training mode (label dropout, dropout), the forget term in
    evaluation mode (the forget condition itself, no label dropout); the model has no
    state (``{}``).

    Args:
      loss: ``loss(params, model_state, batch, train) -> (loss, model_state)``.
      tx: the update direction without the learning rate (e.g. :func:`adam_tx`).
      sign: the sign of the forget term (-1: ascend the forget loss).

    Returns:
      ``step(state, batch, scalars, memory=None, grad_mask=None) -> (state, (l_r, l_f))``
      on a :class:`~scissorhands_jax._loop.TrainState`: ``batch`` is ``(b_r, b_f)``
      (``b_f`` None: the retain term alone), ``scalars`` an :class:`ObjectiveScalars`,
      ``memory`` feeds the projection transform when ``tx`` has one, ``grad_mask`` (a
      tree of bools, per leaf or per entry) zeroes the other gradient entries before
      the optimiser. The state's parameters and optimiser state are donated: use the
      returned state.
    """
    update = jax.jit(functools.partial(_objective_update, loss, tx, float(sign)),
                     donate_argnums=(0, 1))  # fmt: skip

    def step(
        state: TrainState,
        batch: tuple[Batch, Batch | None],
        scalars: ObjectiveScalars,
        memory: Params | None = None,
        grad_mask: Mask | None = None,
    ) -> tuple[TrainState, tuple[jax.Array, jax.Array]]:
        b_r, b_f = batch
        params, opt_state, l_r, l_f = update(
            state.params, state.opt_state, b_r, b_f, scalars, memory, grad_mask
        )
        new = state._replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new, (l_r, l_f)

    return step


def train_objective(
    loss: ModelLossFn,
    params: Params,
    *,
    retain: BatchSource,
    key: PRNGKey,
    steps: int,
    lr: float,
    tx: optax.GradientTransformation,
    forget: BatchSource | None = None,
    w_retain: float = 1.0,
    w_forget: float = 0.0,
    sign: float = -1.0,
    grad_mask: Mask | None = None,
    memory_fn: Callable[[Params, PRNGKey], Params] | None = None,
    memory_every: int = 1,
    log_every: int = 100,
    progress: bool = False,
    desc: str = "train",
) -> tuple[Params, list[dict[str, Any]]]:
    """Runs ``steps`` of :func:`objective_step`, drawing retain and forget batches endlessly.

    With ``k_r, k_f, k_m = split(key, 3)``: epoch e of the retain (forget) data is drawn
    with ``fold_in(k_r, e)`` (``fold_in(k_f, e)``), the memory before step s with
    ``fold_in(k_m, s)``.

    Args:
      loss: ``loss(params, model_state, batch, train) -> (loss, model_state)``.
      params: the starting parameters; placed on a mesh
        (:func:`~scissorhands_jax.parallel.on_mesh`), every batch is split over it.
      retain: :data:`BatchSource` of the retain term.
      key: PRNG key; the run is a pure function of it.
      steps: optimiser steps.
      lr: the learning rate (a traced argument: no recompilation per value).
      tx: the update direction without the learning rate (e.g. :func:`adam_tx`).
      forget: :data:`BatchSource` of the forget term, or None for the retain term only.
      w_retain, w_forget, sign: the objective's weights (see :func:`objective_step`).
      grad_mask: gradient mask (see :func:`objective_step`).
      memory_fn: ``memory_fn(params, key) -> memory`` for a projecting ``tx``, called
        at step 0 and every ``memory_every`` steps after.
      memory_every: steps between memory refreshes.
      log_every: steps per log entry.
      progress: show a progress bar.
      desc: the progress bar's label.

    Returns:
      ``(params, log)`` with the entries of :func:`~scissorhands_jax._loop.run_steps`.

    Raises:
      ValueError: for ``steps < 0``, ``memory_every < 1``, ``log_every < 1``, an
        ``lr`` that is not finite and > 0, or non-finite weights.
      FloatingPointError: at the step where a loss becomes non-finite or the retain
        loss diverges (see :class:`~scissorhands_jax._loop.LossGuard`).
    """
    check_int("steps", steps, 0)
    check_int("memory_every", memory_every, 1)
    check_int("log_every", log_every, 1)
    lr = check_real("lr", lr, positive=True, hint="the learning rate of Adam's direction")
    for name, value in (("w_retain", w_retain), ("w_forget", w_forget), ("sign", sign)):
        check_real(name, value)
    params = private_copy(params)  # the steps donate it
    mesh = mesh_of(params)  # parameters placed on a mesh: every batch split over it
    k_r, k_f, k_m = jax.random.split(key, 3)
    retains = cycle(retain, k_r)
    forgets = cycle(forget, k_f) if forget is not None else itertools.repeat(None)
    scalars = ObjectiveScalars(jnp.float32(w_retain), jnp.float32(w_forget), jnp.float32(lr))
    run_step = objective_step(loss, tx, sign=float(sign))

    def step(st, batch):
        b_r, b_f = batch
        if mesh is not None:
            b_r, b_f = shard_batch(b_r, mesh), None if b_f is None else shard_batch(b_f, mesh)
        return run_step(st, (b_r, b_f), scalars, st.memory, grad_mask)

    hook = None
    if memory_fn is not None:

        def hook(st, i):
            return memory_fn(st.params, jax.random.fold_in(k_m, i))

    state, log = run_steps(
        step,
        TrainState(0, params, {}, tx.init(params)),
        zip(retains, forgets, strict=False),  # both endless
        steps=steps,
        memory_fn=hook,
        memory_every=memory_every,
        log_every=log_every,
        progress=progress,
        desc=desc,
    )
    return state.params, log
