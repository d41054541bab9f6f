"""Phase 2 of Scissorhands: fine-tuning under the forget-memory projection."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._types import BatchSource, Mask, ModelState, Params, PRNGKey
from scissorhands_jax.data._batching import first_batch
from scissorhands_jax.memory import forget_memory
from scissorhands_jax.models._adapters import Model, bind_state
from scissorhands_jax.parallel import on_mesh, sharded_source
from scissorhands_jax.projection import gem_projection, orthogonal_projection

PROJECTIONS = ("gem", "orthogonal", "orthogonal_on_conflict", "none")


@functools.lru_cache(maxsize=64)
def _optimizer(projection, margin, eps, lr, momentum, weight_decay, mask_def, mask_leaves):
    mask = jax.tree.unflatten(mask_def, mask_leaves)
    if projection == "gem":
        proj = gem_projection(margin, eps, mask=mask)
    elif projection == "none":
        proj = optax.identity()
    else:
        proj = orthogonal_projection(
            eps, only_on_conflict=projection == "orthogonal_on_conflict", mask=mask
        )
    return optax.chain(
        proj, optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum)
    )


@functools.partial(jax.jit, static_argnames="loss")
def _train_grad(loss, params, state, batch):
    """Loss, new model state and gradient of one batch in training mode.

    Joint steps call it twice (retain, then forget batch, threading the state as the
    release's two forward passes do) and retain-only steps once, so one compiled
    program per batch shape serves both kinds of step.
    """
    (value, state), grads = jax.value_and_grad(lambda p: loss(p, state, batch, True), has_aux=True)(
        params
    )
    return value, state, grads


@functools.partial(jax.jit, static_argnames=("tx", "project"))
def _apply(tx, project, params, opt_state, g_r, g_f, lam, memory):
    r"""One optimiser step on :math:`g = g_r - \lambda g_f` (or :math:`g_r` alone when
    ``g_f`` is None), projected against ``memory`` when ``project``; returns the raw
    gradient too (the release-parity memory needs the last one)."""
    grads = g_r if g_f is None else jax.tree.map(lambda a, b: a - lam * b, g_r, g_f)
    updates, opt_state = tx.update(grads, opt_state, params, memory=memory if project else None)
    return optax.apply_updates(params, updates), opt_state, grads


def _projected_count(opt_state) -> int:
    proj_state = opt_state[0]
    return int(proj_state.projected) if hasattr(proj_state, "projected") else 0


def repair(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: BatchSource,
    forget: BatchSource,
    key: PRNGKey,
    eligible: Mask,
    lr: float = 5e-3,
    epochs: int = 10,
    lam: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    memory_num: int = 1,
    margin: float = 0.5,
    eps: float = 1e-3,
    projection: str = "gem",
    project_every: int = 1,
    release_memory: bool = False,
    stale: Params | None = None,
    eval_fn: Callable[[Params, ModelState], dict[str, float]] | None = None,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    shard_params: bool = False,
) -> tuple[Params, ModelState, list[dict[str, Any]]]:
    r"""Phase 2: fine-tune on :math:`L_r - \lambda L_f` under the forget-memory projection.

    Epoch e: (1) with the model in evaluation mode, the memory of ``memory_num`` fresh
    forget batches (:func:`forget_memory`, eligible leaves only); (2) the retain and
    forget batches side by side: joint steps on :math:`L(b_r) - \lambda L(b_f)` while
    forget batches remain, then plain :math:`L(b_r)`; the epoch ends with the retain
    data. The projection acts on joint steps whose 1-based index i has
    ``i % project_every == 0``, before weight decay and momentum SGD. Keys are folded in
    per epoch, so a run is a pure function of ``key``.

    Args:
      model: the :class:`Model`.
      params: trimmed parameters.
      model_state: model state.
      retain: :data:`BatchSource` of the retain set.
      forget: :data:`BatchSource` of the forget set.
      key: PRNG key.
      eligible: bool-per-leaf tree; the memory and projection live on these leaves.
      lr: constant learning rate.
      epochs: repair epochs.
      lam: weight :math:`\lambda` of the forget loss.
      momentum: SGD momentum.
      weight_decay: coupled weight decay.
      memory_num: forget batches in the memory (t).
      margin: GEM margin.
      eps: ridge of the QP.
      projection: ``"gem"``, ``"orthogonal"``, ``"orthogonal_on_conflict"`` or ``"none"``.
      project_every: project only every n-th joint step (10 in two release settings).
      release_memory: reproduce the release's stale-gradient memory (SPEC *quirk*):
        memory = gradient left from before (``stale`` in epoch 0, else the previous
        epoch's last raw step gradient) plus accumulated forget gradients.
      stale: the epoch-0 stale gradient for ``release_memory``.
      eval_fn: ``eval_fn(params, model_state) -> dict`` logged after every epoch.
      progress: show a progress bar.
      mesh: run data-parallel on this mesh (see :func:`scissorhands_jax.parallel.data_mesh`):
        every batch is split over its data axis and the parameters, model state,
        optimiser state and memory are replicated, so the same jitted steps run
        partitioned with global-batch semantics. None: the default device.
      shard_params: with ``mesh``, split large parameter leaves over the data axis
        instead of replicating them (see :func:`scissorhands_jax.parallel.on_mesh`).

    Returns:
      ``(params, model_state, log)``; each log entry has ``epoch``, ``loss_retain``,
      ``loss_forget``, ``joint_steps``, ``retain_steps``, ``projected_steps``,
      ``time_s`` and what ``eval_fn`` returned.

    Raises:
      FloatingPointError: when a loss becomes non-finite (lower ``lr`` or ``lam``).
    """
    mask_leaves, mask_def = jax.tree.flatten(eligible)
    tx = _optimizer(
        projection, margin, eps, lr, momentum, weight_decay, mask_def, tuple(map(bool, mask_leaves))
    )
    if mesh is not None:
        params, model_state, stale = (
            on_mesh(tree, mesh, shard=shard_params) for tree in (params, model_state, stale)
        )
        retain, forget = sharded_source(retain, mesh), sharded_source(forget, mesh)
    opt_state = tx.init(params)
    if mesh is not None:
        opt_state = on_mesh(opt_state, mesh)
    k_mem, k_retain, k_forget = jax.random.split(key, 3)
    total = getattr(retain, "num_batches", None)
    log: list[dict[str, Any]] = []
    last_grads = stale
    lam_arr = jnp.float32(lam)
    for epoch in range(epochs):
        start = time.perf_counter()
        memory = None
        if projection != "none":
            mem_batches = [
                first_batch(forget, jax.random.fold_in(jax.random.fold_in(k_mem, epoch), i))
                for i in range(memory_num)
            ]
            memory = forget_memory(
                bind_state(model, model_state, train=False),
                params,
                mem_batches,
                eligible=eligible,
                accumulate=release_memory,
                stale=None if last_grads is None or not release_memory else last_grads,
            )
        projected_before = _projected_count(opt_state)
        r_losses, f_losses, joint, plain = [], [], 0, 0
        pairs = itertools.zip_longest(
            retain(jax.random.fold_in(k_retain, epoch)), forget(jax.random.fold_in(k_forget, epoch))
        )
        bar = tqdm(
            pairs,
            total=total,
            desc=f"repair {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for i, (b_r, b_f) in enumerate(bar, start=1):
            if b_r is None:
                break
            l_r, model_state, g_r = _train_grad(model.loss, params, model_state, b_r)
            if b_f is None:
                params, opt_state, grads = _apply(
                    tx, False, params, opt_state, g_r, None, lam_arr, None
                )
                plain += 1
            else:
                l_f, model_state, g_f = _train_grad(model.loss, params, model_state, b_f)
                project = memory is not None and i % project_every == 0
                params, opt_state, grads = _apply(
                    tx, project, params, opt_state, g_r, g_f, lam_arr, memory
                )
                f_losses.append(l_f)
                joint += 1
            r_losses.append(l_r)
            last_grads = grads
        entry = {
            "epoch": epoch,
            "loss_retain": float(np.mean(jax.device_get(r_losses))) if r_losses else float("nan"),
            "loss_forget": float(np.mean(jax.device_get(f_losses))) if f_losses else float("nan"),
            "joint_steps": joint,
            "retain_steps": plain,
            "projected_steps": _projected_count(opt_state) - projected_before,
        }
        if not all(
            np.isfinite(entry[k])
            for k in ("loss_retain", "loss_forget")
            if joint or k == "loss_retain"
        ):
            raise FloatingPointError(
                f"repair epoch {epoch}: the loss became non-finite (retain "
                f"{entry['loss_retain']}, forget {entry['loss_forget']}); lower lr or lam."
            )
        entry["time_s"] = time.perf_counter() - start
        if eval_fn is not None:
            entry.update(eval_fn(params, model_state))
        log.append(entry)
    return params, model_state, log
