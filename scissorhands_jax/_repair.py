"""Phase 2 of Scissorhands: fine-tuning under the forget-memory projection.

:func:`repair_tx` is the optimiser (projection, coupled weight decay, momentum SGD),
:func:`repair_step` builds a run's step of it on a retain and a forget batch, and
:func:`repair` the epochs of the release, run by the one loop of
:func:`scissorhands_jax._loop.run_steps`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from scissorhands_jax._loop import LossGuard, TrainState, private_copy, run_steps
from scissorhands_jax._memory import forget_memory
from scissorhands_jax._projection import gem_projection, orthogonal_projection
from scissorhands_jax._settings import ProjectionSettings, RepairSettings
from scissorhands_jax._types import (
    Batch,
    BatchSource,
    Mask,
    ModelLossFn,
    ModelState,
    Params,
    PRNGKey,
)
from scissorhands_jax.data.batching import first_batch
from scissorhands_jax.models.adapters import bind_state
from scissorhands_jax.parallel import mesh_of, on_mesh, sharded_source


def projection_tx(settings: ProjectionSettings, mask: Mask | None) -> optax.GradientTransformation:
    """The projection named by ``settings.projection`` as an optax transform on ``mask``'s
    leaves (``optax.identity()`` for ``"none"``)."""
    if settings.projection == "gem":
        return gem_projection(settings.margin, settings.eps, eligible=mask)
    if settings.projection == "none":
        return optax.identity()
    only = settings.projection == "orthogonal_on_conflict"
    return orthogonal_projection(settings.eps, only_on_conflict=only, eligible=mask)


def projects_in_epoch(projection: ProjectionSettings, epoch: int) -> bool:
    """Whether repair epoch ``epoch`` (0-based) builds a forget memory and projects: a
    projection is set and the epoch is among the first ``projection.project_epochs`` (all when
    None, the method as published)."""
    if projection.projection == "none":
        return False
    return projection.project_epochs is None or epoch < projection.project_epochs


def repair_tx(
    eligible: Mask,
    settings: RepairSettings = RepairSettings(),
    projection: ProjectionSettings = ProjectionSettings(),
) -> optax.GradientTransformation:
    """The repair optimiser: the projection (on the eligible leaves), then coupled
    weight decay, then momentum SGD at the constant ``settings.lr``."""
    return optax.chain(
        projection_tx(projection, eligible),
        optax.add_decayed_weights(settings.weight_decay),
        optax.sgd(settings.lr, momentum=settings.momentum),
    )


def _grad_pass(loss, params, state, batch):
    """Loss, new model state and gradient of one batch in training mode."""
    (value, state), grads = jax.value_and_grad(lambda p: loss(p, state, batch, True), has_aux=True)(
        params
    )
    return value, state, grads


def _update(tx, params, opt_state, g_r, g_f, lam, memory):
    """``tx`` on :math:`g_r - \\lambda g_f` (:math:`g_r` alone when ``g_f`` is None),
    projected against ``memory`` unless it is None."""
    grads = g_r if g_f is None else jax.tree.map(lambda a, b: a - lam * b, g_r, g_f)
    updates, opt_state = tx.update(grads, opt_state, params, memory=memory)
    return optax.apply_updates(params, updates), opt_state


RepairStep = Callable[..., tuple[TrainState, tuple[jax.Array, jax.Array | None]]]
"""``step(state, batch, lam, memory=None, project=True) -> (state, (l_r, l_f))``: one
run's repair step (:func:`repair_step`)."""


def repair_step(loss: ModelLossFn, tx: optax.GradientTransformation) -> RepairStep:
    r"""The repair step of one run on :math:`g = \nabla L(b_r) - \lambda \nabla L(b_f)`,
    compiled once for the run (``loss`` and ``tx`` are bound before ``jax.jit``).

    Both losses run in training mode, the model state threaded through the retain pass,
    then the forget pass, as the release's two forward passes do; with ``b_f`` None
    the step is on :math:`\nabla L(b_r)` alone. ``tx`` (:func:`repair_tx`) projects
    against ``memory`` when ``project`` is True and a memory is given. The gradient
    passes and the update are separate programs, so retain-only and joint steps share
    them.

    Args:
      loss: ``loss(params, model_state, batch, train) -> (loss, new_model_state)``.
      tx: the repair optimiser (:func:`repair_tx`).

    Returns:
      ``step(state, batch, lam, memory=None, project=True) -> (state, (l_r, l_f))`` on
      a :class:`~scissorhands_jax._loop.TrainState`: ``batch`` is ``(b_r, b_f)``,
      ``lam`` a traced scalar, ``project`` this step's projection flag; ``l_f`` is None
      for a retain-only step. The state's parameters and optimiser state are donated:
      use the returned state.
    """
    grad_pass = jax.jit(functools.partial(_grad_pass, loss))
    update = jax.jit(functools.partial(_update, tx), donate_argnums=(0, 1))

    def step(
        state: TrainState,
        batch: tuple[Batch, Batch | None],
        lam: jax.Array,
        memory: Params | None = None,
        project: bool = True,
    ) -> tuple[TrainState, tuple[jax.Array, jax.Array | None]]:
        b_r, b_f = batch
        l_r, model_state, g_r = grad_pass(state.params, state.model_state, b_r)
        l_f = g_f = None
        if b_f is not None:
            l_f, model_state, g_f = grad_pass(state.params, model_state, b_f)
        memory = memory if project and b_f is not None else None
        params, opt_state = update(state.params, state.opt_state, g_r, g_f, lam, memory)
        new = state._replace(step=state.step + 1, params=params, model_state=model_state,
                             opt_state=opt_state)  # fmt: skip
        return new, (l_r, l_f)

    return step


def repair(
    loss: ModelLossFn,
    params: Params,
    model_state: ModelState,
    *,
    retain: BatchSource,
    forget: BatchSource,
    key: PRNGKey,
    eligible: Mask,
    settings: RepairSettings = RepairSettings(),
    projection: ProjectionSettings = ProjectionSettings(),
    eval_fn: Callable[[Params, ModelState], dict[str, float]] | None = None,
    progress: bool = False,
) -> tuple[Params, ModelState, list[dict[str, Any]]]:
    r"""Phase 2: fine-tune on :math:`L_r - \lambda L_f` under the forget-memory projection.

    Epoch e: (1) with the model in evaluation mode, the memory of ``memory_num`` fresh
    forget batches (:func:`forget_memory`, eligible leaves only); (2) the retain and
    forget batches side by side: joint steps on :math:`L(b_r) - \lambda L(b_f)` while
    forget batches remain, then plain :math:`L(b_r)`; the epoch ends with the retain
    data. The projection acts on joint steps whose 1-based index i in the epoch has
    ``i % projection.project_every == 0``, before weight decay and momentum SGD; with
    ``projection.project_epochs`` set, only in the first ``project_epochs`` epochs (the
    later ones build no memory: :func:`projects_in_epoch`). Keys are folded in per epoch, so a
    run is a pure function of ``key``.

    Args:
      loss: ``loss(params, model_state, batch, train) -> (loss, new_model_state)``.
      params: trimmed parameters. Placed on a mesh
        (:func:`~scissorhands_jax.parallel.on_mesh`, replicated or with large leaves
        split), the repair runs data-parallel: every batch is split over its data axis,
        and the model and optimiser states join the parameters.
      model_state: model state.
      retain: :data:`BatchSource` of the retain set.
      forget: :data:`BatchSource` of the forget set.
      key: PRNG key.
      eligible: bool-per-leaf tree; the memory and projection live on these leaves.
      settings: learning rate, epochs, :math:`\lambda`, momentum, weight decay.
      projection: the memory and the projection.
      eval_fn: ``eval_fn(params, model_state) -> dict`` logged after every epoch.
      progress: show a progress bar.

    Returns:
      ``(params, model_state, log)``; one entry per epoch: ``epoch`` and the fields of
      :func:`~scissorhands_jax._loop.run_steps`, then what ``eval_fn`` returned.

    Raises:
      FloatingPointError: at the step where a loss becomes non-finite (naming a batch
        that holds NaN or inf when that is the cause) or the retain loss diverges
        (:class:`~scissorhands_jax._loop.LossGuard`; lower ``lr`` or ``lam``).
    """
    tx = repair_tx(eligible, settings, projection)
    params = private_copy(params)  # the steps donate it
    mesh = mesh_of(params)
    if mesh is not None:  # computation follows the parameters' placement
        model_state = on_mesh(model_state, mesh)
        retain, forget = sharded_source(retain, mesh), sharded_source(forget, mesh)
    opt_state = tx.init(params)
    if mesh is not None:
        opt_state = on_mesh(opt_state, mesh)
    state = TrainState(0, params, model_state, opt_state)
    k_mem, k_retain, k_forget = jax.random.split(key, 3)
    lam = jnp.float32(settings.lam)

    run_step = repair_step(loss, tx)  # compiled once for the run
    log: list[dict[str, Any]] = []
    guard = LossGuard()  # one for the whole repair: the divergence bound is its first loss
    for epoch in range(settings.epochs):
        first = state.step  # the projection acts on the epoch's steps i with i % every == 0

        def step(st, batch, first=first):
            project = (st.step - first + 1) % projection.project_every == 0  # i is 1-based
            return run_step(st, batch, lam, st.memory, project)

        memory_fn = None
        if projects_in_epoch(projection, epoch):
            k_epoch = jax.random.fold_in(k_mem, epoch)

            def memory_fn(st, _i, k_epoch=k_epoch):
                batches = [
                    first_batch(forget, jax.random.fold_in(k_epoch, j))
                    for j in range(projection.memory_num)
                ]
                return forget_memory(
                    bind_state(loss, st.model_state, train=False),
                    st.params,
                    batches,
                    eligible=eligible,
                    cumulative=projection.cumulative_memory,
                )

        pairs = itertools.zip_longest(
            retain(jax.random.fold_in(k_retain, epoch)), forget(jax.random.fold_in(k_forget, epoch))
        )
        state, entries = run_steps(
            step,
            state,
            pairs,
            memory_fn=memory_fn,
            progress=progress,
            desc=f"repair epoch {epoch + 1}/{settings.epochs}",
            total=getattr(retain, "num_batches", None),
            guard=guard,
        )
        if not entries:
            raise ValueError(f"repair epoch {epoch}: the retain source yielded no batch.")
        entry = {"epoch": epoch, **entries[0]}
        if eval_fn is not None:
            entry.update(eval_fn(state.params, state.model_state))
        log.append(entry)
    return state.params, state.model_state, log
