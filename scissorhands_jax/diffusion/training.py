"""Step-based training of a diffusion model on a weighted retain / forget objective.

One jitted step serves the original model (retain term only), Scissorhands' repair
(:math:`L_r - \\lambda L_f` or :math:`L_r + \\lambda L_{anchor}`) and the baselines
(fine-tuning, SalUn's :math:`L_{anchor} + \\alpha L_r` with an elementwise gradient
mask), with an optional forget-memory projection chained in front of Adam, as optax
transforms.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._types import Batch, BatchSource, Mask, Params, PRNGKey
from scissorhands_jax.diffusion.model import DiffusionModel
from scissorhands_jax.projection import gem_projection, orthogonal_projection

PROJECTIONS = ("none", "gem", "orthogonal", "orthogonal_on_conflict")


@functools.lru_cache(maxsize=64)
def adam_direction(
    grad_clip: float | None = None,
    projection: str = "none",
    margin: float = 0.5,
    eps: float = 1e-3,
    mask_def: Any = None,
    mask_leaves: tuple[bool, ...] | None = None,
) -> optax.GradientTransformation:
    """``[projection] -> [clip_by_global_norm] -> scale_by_adam()``: Adam's update
    direction; :func:`train_step` multiplies it by ``-lr``, so one compiled step serves
    every learning rate. Cached: the same settings give the same (hashable) transform.

    The projection acts on the raw gradient, before clipping and Adam, as the release
    projects before its optimiser step.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}.")
    parts = []
    mask = None if mask_def is None else jax.tree.unflatten(mask_def, mask_leaves)
    if projection == "gem":
        parts.append(gem_projection(margin, eps, mask=mask))
    elif projection != "none":
        only = projection == "orthogonal_on_conflict"
        parts.append(orthogonal_projection(eps, only_on_conflict=only, mask=mask))
    if grad_clip is not None:
        parts.append(optax.clip_by_global_norm(grad_clip))
    parts.append(optax.scale_by_adam())
    return optax.chain(*parts)


@functools.partial(jax.jit, static_argnames=("loss", "tx", "sign"))
def train_step(
    loss: Callable,
    tx: optax.GradientTransformation,
    sign: float,
    params: Params,
    opt_state: Any,
    b_r: Batch,
    b_f: Batch | None,
    w_r: jax.Array,
    w_f: jax.Array,
    lr: jax.Array,
    memory: Params | None,
    grad_mask: Mask | None,
):
    r"""One step :math:`\theta \leftarrow \theta - \text{lr} \cdot \text{tx}(g)` on
    :math:`w_r L(\theta; b_r) + \text{sign} \cdot w_f L(\theta; b_f)`.

    The retain term runs in training mode (label dropout, dropout), the forget term in
    evaluation mode (the forget condition itself, no label dropout). ``grad_mask`` (a
    tree of bools, per leaf or per entry) zeroes the other gradient entries before the
    optimiser; ``memory`` feeds the projection transform, when ``tx`` has one.

    Returns:
      ``(params, opt_state, loss_retain, loss_forget)``.
    """

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


def cycle(source: BatchSource, key: PRNGKey) -> Iterator[Batch]:
    """Endless batches: epoch e of ``source`` is drawn with ``fold_in(key, e)``."""
    epoch = 0
    while True:
        empty = True
        for batch in source(jax.random.fold_in(key, epoch)):
            empty = False
            yield batch
        if empty:
            raise ValueError("the data source yielded no batch: is the data set empty?")
        epoch += 1


def run_steps(
    model: DiffusionModel,
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
    """Runs ``steps`` of :func:`train_step`, drawing retain and forget batches endlessly.

    Args:
      model: the :class:`DiffusionModel`.
      params: the starting parameters.
      retain: :data:`BatchSource` of the retain term (a :class:`NoisedSource`).
      key: PRNG key; the run is a pure function of it.
      steps: optimiser steps.
      lr: the learning rate (a traced argument: no recompilation per value).
      tx: the update direction without the learning rate (e.g. :func:`adam_direction`;
        ``optax.scale_by_adam()`` or ``optax.identity()`` for SGD).
      forget: :data:`BatchSource` of the forget term, or None for the retain term only.
      w_retain, w_forget, sign: the objective's weights (see :func:`train_step`).
      grad_mask: gradient mask (see :func:`train_step`).
      memory_fn: ``memory_fn(params, key) -> memory`` for a projecting ``tx``, called
        at step 0 and every ``memory_every`` steps after.
      memory_every: steps between memory refreshes.
      log_every: steps per log entry (the mean losses over them).
      progress: show a progress bar.
      desc: the progress bar's label.

    Returns:
      ``(params, log)``, one ``{"step", "loss_retain", "loss_forget", "time_s"}`` entry
      per ``log_every`` steps (and one for the remainder).

    Raises:
      ValueError: for ``steps < 0`` or ``memory_every < 1``.
      FloatingPointError: when a loss becomes non-finite.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}.")
    if not isinstance(memory_every, int) or memory_every < 1:
        raise ValueError(f"memory_every must be an integer >= 1, got {memory_every!r}.")
    opt_state = tx.init(params)
    k_r, k_f, k_m = jax.random.split(key, 3)
    r_iter = cycle(retain, k_r)
    f_iter = cycle(forget, k_f) if forget is not None else None
    w_r, w_f, lr_arr = jnp.float32(w_retain), jnp.float32(w_forget), jnp.float32(lr)
    memory = None
    log: list[dict[str, Any]] = []
    window: list[tuple[jax.Array, jax.Array]] = []
    start = time.perf_counter()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        if memory_fn is not None and step % memory_every == 0:
            memory = memory_fn(params, jax.random.fold_in(k_m, step))
        b_f = next(f_iter) if f_iter is not None else None
        params, opt_state, l_r, l_f = train_step(
            model.loss,
            tx,
            float(sign),
            params,
            opt_state,
            next(r_iter),
            b_f,
            w_r,
            w_f,
            lr_arr,
            memory,
            grad_mask,
        )
        window.append((l_r, l_f))
        if len(window) == log_every or step == steps - 1:
            l_rs, l_fs = np.asarray(jax.device_get(window)).T
            entry = {
                "step": step + 1,
                "loss_retain": float(np.mean(l_rs)),
                "loss_forget": float(np.mean(l_fs)) if forget is not None else None,
                "time_s": time.perf_counter() - start,
            }
            if not np.all(np.isfinite(l_rs)) or not np.all(np.isfinite(l_fs)):
                raise FloatingPointError(
                    f"{desc}: a loss became non-finite by step {step + 1} ({entry}); lower "
                    "the learning rate or the forget weight."
                )
            log.append(entry)
            window = []
    return params, log


def train_diffusion(
    model: DiffusionModel,
    params: Params,
    data: BatchSource,
    *,
    key: PRNGKey,
    steps: int,
    lr: float = 2e-4,
    grad_clip: float | None = 1.0,
    log_every: int = 100,
    progress: bool = False,
    desc: str = "train",
) -> tuple[Params, list[dict[str, Any]]]:
    """Trains on the ε-prediction loss (with the model's label dropout): Adam, gradient
    clipping at global norm ``grad_clip``, as SalUn's CIFAR-10 DDPM (lr 2e-4, clip 1).

    Returns:
      ``(params, log)`` (see :func:`run_steps`).
    """
    return run_steps(
        model,
        params,
        retain=data,
        key=key,
        steps=steps,
        lr=lr,
        tx=adam_direction(grad_clip),
        log_every=log_every,
        progress=progress,
        desc=desc,
    )
