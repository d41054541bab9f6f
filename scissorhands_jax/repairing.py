"""Phase 2 of Scissorhands: fine-tuning under the forget-memory projection.

:func:`repair_tx` is the optimiser (projection, coupled weight decay, momentum SGD),
:func:`repair_step` one jittable step of it on a retain and a forget batch, and
:func:`repair` the epochs of the release, run by the one loop of
:func:`scissorhands_jax.loop.run_steps`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

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
from scissorhands_jax.loop import LossGuard, TrainState, private_copy, run_steps
from scissorhands_jax.memory import forget_memory
from scissorhands_jax.models.adapters import bind_state
from scissorhands_jax.parallel import mesh_of, on_mesh, sharded_source
from scissorhands_jax.projection import gem_projection, orthogonal_projection
from scissorhands_jax.settings import ProjectionSettings, RepairSettings


def projection_tx(settings: ProjectionSettings, mask: Mask | None) -> optax.GradientTransformation:
    """The projection named by ``settings.kind`` as an optax transform on ``mask``'s
    leaves (``optax.identity()`` for ``"none"``)."""
    if settings.kind == "gem":
        return gem_projection(settings.margin, settings.eps, eligible=mask)
    if settings.kind == "none":
        return optax.identity()
    only = settings.kind == "orthogonal_on_conflict"
    return orthogonal_projection(settings.eps, only_on_conflict=only, eligible=mask)


def projects_in_epoch(projection: ProjectionSettings, epoch: int) -> bool:
    """Whether repair epoch ``epoch`` (0-based) builds a forget memory and projects: a
    projection is set and the epoch is among the first ``projection.epochs`` (all when
    None, the method as published)."""
    if projection.kind == "none":
        return False
    return projection.epochs is None or epoch < projection.epochs


def repair_tx(
    eligible: Mask,
    settings: RepairSettings = RepairSettings(),
    projection: ProjectionSettings = ProjectionSettings(),
) -> optax.GradientTransformation:
    """The repair optimiser: the projection (on the eligible leaves), then coupled
    weight decay, then momentum SGD at the constant ``settings.lr``.

    The same settings and eligible leaves give the same (hashable) object, so the
    programs compiled for it are reused.
    """
    leaves, treedef = jax.tree.flatten(eligible)
    sgd = (settings.lr, settings.momentum, settings.weight_decay)
    proj = (projection.kind, projection.margin, projection.eps)  # what the update reads
    return _cached_tx(sgd, proj, treedef, tuple(map(bool, leaves)))


@functools.lru_cache(maxsize=64)
def _cached_tx(sgd, proj, mask_def, mask_leaves):
    (lr, momentum, weight_decay), (kind, margin, eps) = sgd, proj
    mask = jax.tree.unflatten(mask_def, mask_leaves)
    return optax.chain(
        projection_tx(ProjectionSettings(kind=kind, margin=margin, eps=eps), mask),
        optax.add_decayed_weights(weight_decay),
        optax.sgd(lr, momentum=momentum),
    )


@functools.partial(jax.jit, static_argnames="loss")
def _grad_pass(loss, params, state, batch):
    """Loss, new model state and gradient of one batch in training mode (one compiled
    program per batch shape serves the retain and the forget pass)."""
    (value, state), grads = jax.value_and_grad(lambda p: loss(p, state, batch, True), has_aux=True)(
        params
    )
    return value, state, grads


@functools.partial(jax.jit, static_argnames=("tx", "project"), donate_argnums=(2, 3))
def repair_update(tx, project, params, opt_state, g_r, g_f, lam, memory):
    r"""The update of :func:`repair_step` on given gradients: ``tx`` on
    :math:`g_r - \lambda g_f` (:math:`g_r` alone when ``g_f`` is None), projected
    against ``memory`` when ``project``; returns ``(params, opt_state)``. ``params`` and
    ``opt_state`` are donated (their buffers hold the result): use the returned ones."""
    grads = g_r if g_f is None else jax.tree.map(lambda a, b: a - lam * b, g_r, g_f)
    updates, opt_state = tx.update(grads, opt_state, params, memory=memory if project else None)
    return optax.apply_updates(params, updates), opt_state


def repair_grads(loss, params, model_state, b_r, b_f):
    """The gradient passes of :func:`repair_step`: ``(l_r, l_f, model_state, g_r, g_f)``,
    the model state threaded through the retain, then the forget pass (training mode)."""
    l_r, model_state, g_r = _grad_pass(loss, params, model_state, b_r)
    l_f, model_state, g_f = _grad_pass(loss, params, model_state, b_f)
    return l_r, l_f, model_state, g_r, g_f


def repair_step(
    loss: ModelLossFn,
    tx: optax.GradientTransformation,
    params: Params,
    model_state: ModelState,
    opt_state: optax.OptState,
    b_r: Batch,
    b_f: Batch | None,
    lam: jax.Array,
    memory: Params | None,
    project: bool = True,
) -> tuple[Params, ModelState, optax.OptState, jax.Array, jax.Array | None]:
    r"""One repair step on :math:`g = \nabla L(b_r) - \lambda \nabla L(b_f)`.

    Both losses run in training mode, the model state threaded through the retain pass,
    then the forget pass, as the release's two forward passes do; with ``b_f`` None
    the step is on :math:`\nabla L(b_r)` alone. ``tx`` (:func:`repair_tx`) projects
    against ``memory`` when ``project`` is True and a memory is given. ``params`` and
    ``opt_state`` are donated to the update: use the returned ones.

    It can be wrapped in ``jax.jit`` (``loss``, ``tx`` and ``project`` static); called
    as it is, its gradient passes and its update run as separately compiled programs,
    so retain-only and joint steps share them.

    Returns:
      ``(params, model_state, opt_state, loss_retain, loss_forget)``; ``loss_forget``
      is None for a retain-only step.
    """
    if b_f is None:
        l_r, model_state, g_r = _grad_pass(loss, params, model_state, b_r)
        params, opt_state = repair_update(tx, False, params, opt_state, g_r, None, lam, None)
        return params, model_state, opt_state, l_r, None
    l_r, l_f, model_state, g_r, g_f = repair_grads(loss, params, model_state, b_r, b_f)
    project = bool(project) and memory is not None
    params, opt_state = repair_update(tx, project, params, opt_state, g_r, g_f, lam, memory)
    return params, model_state, opt_state, l_r, l_f


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
    ``i % projection.every == 0``, before weight decay and momentum SGD; with
    ``projection.epochs`` set, only in the first ``projection.epochs`` epochs (the later
    ones build no memory: :func:`projects_in_epoch`). Keys are folded in per epoch, so a
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
      :func:`~scissorhands_jax.loop.run_steps`, then what ``eval_fn`` returned.

    Raises:
      FloatingPointError: at the step where a loss becomes non-finite (naming a batch
        that holds NaN or inf when that is the cause) or the retain loss diverges
        (:class:`~scissorhands_jax.loop.LossGuard`; lower ``lr`` or ``lam``).
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

    def step(st, b_r, b_f, memory, i):
        project = i % projection.every == 0
        p, s, o, l_r, l_f = repair_step(
            loss, tx, st.params, st.model_state, st.opt_state, b_r, b_f, lam, memory, project
        )
        return TrainState(st.step + 1, p, s, o), l_r, l_f

    log: list[dict[str, Any]] = []
    guard = LossGuard()  # one for the whole repair: the divergence bound is its first loss
    for epoch in range(settings.epochs):
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
                    cumulative=projection.cumulative,
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
