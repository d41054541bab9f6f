"""Scissorhands: trim by connection sensitivity, then repair under gradient projection.

Wu & Harandi, "Scissorhands: Scrub Data Influence via Connection Sensitivity in
Networks", ECCV 2024 (arXiv 2401.06187). The defaults are the release's CIFAR-10
random-10 % setting (SPEC's hyperparameter table).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Batch, BatchSource, Mask, ModelState, Params, PRNGKey
from scissorhands_jax.data._batching import array_source, first_batch
from scissorhands_jax.models._adapters import Model, bind_state
from scissorhands_jax.parallel import on_mesh, sharded_source
from scissorhands_jax.reinit import PathPredicate, eligible_mask, masked_reinit, torch_default_init
from scissorhands_jax.repair import PROJECTIONS, repair
from scissorhands_jax.saliency import (
    as_partial,
    check_sparsity,
    connection_sensitivity,
    loss_and_grad,
    top_k_threshold,
)

REINITS = ("model", "torch")


class ScissorhandsResult(NamedTuple):
    """What :func:`scissorhands` returns.

    Attributes:
      params: the unlearned parameters.
      model_state: the model state after repair (BatchNorm statistics).
      mask: bool tree, True where an entry was re-initialised (selection within the
        eligible leaves).
      log: one dict per repair epoch (see :func:`repair`), after a ``"trim"`` entry.
    """

    params: Params
    model_state: ModelState
    mask: Mask
    log: list[dict[str, Any]]


def _as_source(data: Any, batch_size: int, name: str) -> BatchSource:
    if callable(data):
        return data
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(data)}
    if not sizes or sizes == {0}:
        raise ValueError(
            f"the {name} set is empty; "
            + (
                "unlearning needs at least one forget example."
                if name == "forget"
                else "a forget set equal to the whole training set leaves nothing to retain "
                "(train a new model instead)."
            )
        )
    return array_source(data, batch_size, shuffle=True)


def check_settings(
    *, sparsity, projection, reinit, project_every, epochs, memory_num, prune_num, **_
) -> None:
    """Raises ValueError for settings :func:`scissorhands` cannot run, before any work."""
    check_sparsity(sparsity)
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}.")
    if reinit not in REINITS:
        raise ValueError(f"reinit must be one of {REINITS}, got {reinit!r}.")
    for name, value, low in (
        ("project_every", project_every, 1),
        ("epochs", epochs, 0),
        ("memory_num", memory_num, 1),
        ("prune_num", prune_num, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def trim(
    model: Model,
    params: Params,
    model_state: ModelState,
    forget: BatchSource,
    *,
    key: PRNGKey,
    sparsity: float = 0.97,
    eligible: Mask,
    prune_num: int = 1,
    reinit: str = "model",
    saliency_train_mode: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[Params, Mask, Batch]:
    """Phase 1: connection sensitivity on ``prune_num`` fresh forget batches, global
    top-k, masked re-initialisation of the eligible leaves.

    With ``mesh`` (see :func:`scissorhands_jax.parallel.data_mesh`) the forget batches
    are split over its data axis and parameters and state not yet on it are replicated.

    Returns:
      ``(trimmed_params, reinit_mask, last_saliency_batch)``.
    """
    if mesh is not None:
        params, model_state = on_mesh(params, mesh), on_mesh(model_state, mesh)
        forget = sharded_source(forget, mesh)
    k_batches, k_fresh = jax.random.split(key)
    batches = [first_batch(forget, jax.random.fold_in(k_batches, i)) for i in range(prune_num)]
    loss_fn = bind_state(model, model_state, train=saliency_train_mode)
    scores = connection_sensitivity(loss_fn, params, batches)
    tau = top_k_threshold(scores, sparsity)
    fresh = model.init(k_fresh)[0] if reinit == "model" else torch_default_init(k_fresh, params)
    if mesh is not None:
        fresh = on_mesh(fresh, mesh)
    leaves, treedef = jax.tree.flatten(eligible)
    trimmed, mask = _apply_trim(params, scores, fresh, tau, treedef, tuple(map(bool, leaves)))
    return trimmed, mask, batches[-1]


@functools.partial(jax.jit, static_argnums=(4, 5))
def _apply_trim(params, scores, fresh, tau, eligible_def, eligible_leaves):
    eligible = jax.tree.unflatten(eligible_def, eligible_leaves)
    selected = jax.tree.map(lambda s: s.astype(jnp.float32) > tau, scores)
    trimmed = masked_reinit(params, selected, fresh, eligible=eligible)
    mask = jax.tree.map(lambda m, e: m if e else jnp.zeros_like(m), selected, eligible)
    return trimmed, mask


def scissorhands(
    model: Model,
    params: Params,
    model_state: ModelState | None = None,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    eligible: PathPredicate | str | None = None,
    batch_size: int = 256,
    sparsity: float = 0.97,
    lr: float = 5e-3,
    epochs: int = 10,
    lam: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    prune_num: int = 1,
    memory_num: int = 1,
    margin: float = 0.5,
    eps: float = 1e-3,
    projection: str = "gem",
    project_every: int = 1,
    reinit: str = "model",
    release_memory: bool = False,
    saliency_train_mode: bool = False,
    eval_fn: Callable[[Params, ModelState], dict[str, float]] | None = None,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    shard_params: bool = False,
) -> ScissorhandsResult:
    r"""Unlearns the forget set: trim (:func:`trim`), then repair (:func:`repair`).

    1. :math:`s = |\theta \odot \sum_b |\nabla L(\theta; b)||` on ``prune_num`` fresh
       forget batches; :math:`\tau` = the :math:`\lfloor\text{sparsity}\cdot N\rfloor`-th
       smallest score over all parameters; entries with :math:`s > \tau` in eligible
       leaves are re-initialised (biases to 0).
    2. ``epochs`` of SGD on :math:`L_r - \lambda L_f` with the GEM projection against
       :math:`\nabla[-L_f]` memories refreshed every epoch.

    Args:
      model: a :class:`Model` (from :func:`linen_model` or :func:`nnx_model`).
      params: the trained parameters (not modified).
      model_state: model state (``{}`` or None when there is none).
      retain: retain data: a pytree of arrays with a leading example axis, or a
        :data:`BatchSource`.
      forget: forget data, likewise.
      key: PRNG key; the run is a pure function of it.
      eligible: which leaves may be re-initialised and projected: a path predicate, a
        regex, a preset name of :data:`PRESETS`, or None for all non-normalisation leaves.
      batch_size: batch size for array data.
      sparsity: fraction of parameters kept; 0.97 re-initialises the top 3 %.
      lr, epochs, lam, momentum, weight_decay, memory_num, margin, eps, projection,
        project_every, release_memory, eval_fn, progress: see :func:`repair`.
      prune_num: forget batches for the saliency.
      reinit: fresh values from the model's own initialisers (``"model"``) or PyTorch's
        default kaiming-uniform (``"torch"``, release parity).
      saliency_train_mode: compute the saliency with the model in training mode.
      mesh: run data-parallel on this :class:`jax.sharding.Mesh` (see
        :func:`scissorhands_jax.parallel.data_mesh`): batches split over its data axis,
        parameters and state replicated; N devices give the one-device result on the
        same global batches up to float round-off. None: the default device.
      shard_params: with ``mesh``, split large parameter leaves over the data axis
        (fully sharded data parallelism) instead of replicating them.

    Returns:
      A :class:`ScissorhandsResult`.

    Raises:
      ValueError: bad settings, empty retain or forget data, no eligible leaf.
      FloatingPointError: a non-finite loss during saliency, memory or repair.
    """
    check_settings(
        sparsity=sparsity,
        projection=projection,
        reinit=reinit,
        project_every=project_every,
        epochs=epochs,
        memory_num=memory_num,
        prune_num=prune_num,
    )
    model_state = {} if model_state is None else model_state
    forget_src = _as_source(forget, batch_size, "forget")
    retain_src = _as_source(retain, batch_size, "retain")
    eligible_tree = eligible_mask(params, eligible)
    if mesh is not None:
        params = on_mesh(params, mesh, shard=shard_params)
        model_state = on_mesh(model_state, mesh)
        forget_src, retain_src = sharded_source(forget_src, mesh), sharded_source(retain_src, mesh)
    k_trim, k_repair = jax.random.split(key)
    start = time.perf_counter()
    trimmed, mask, last_batch = trim(
        model,
        params,
        model_state,
        forget_src,
        key=k_trim,
        sparsity=sparsity,
        eligible=eligible_tree,
        prune_num=prune_num,
        reinit=reinit,
        saliency_train_mode=saliency_train_mode,
        mesh=mesh,
    )
    stale = None
    if release_memory:
        loss_fn = bind_state(model, model_state, train=saliency_train_mode)
        stale = loss_and_grad(as_partial(loss_fn), params, last_batch)[1]
    n_reinit = int(sum(np.sum(m) for m in jax.device_get(jax.tree.leaves(mask))))
    trim_entry = {"epoch": "trim", "reinitialised": n_reinit, "time_s": time.perf_counter() - start}
    new_params, new_state, log = repair(
        model,
        trimmed,
        model_state,
        retain=retain_src,
        forget=forget_src,
        key=k_repair,
        eligible=eligible_tree,
        lr=lr,
        epochs=epochs,
        lam=lam,
        momentum=momentum,
        weight_decay=weight_decay,
        memory_num=memory_num,
        margin=margin,
        eps=eps,
        projection=projection,
        project_every=project_every,
        release_memory=release_memory,
        stale=stale,
        eval_fn=eval_fn,
        progress=progress,
        mesh=mesh,
        shard_params=shard_params,
    )
    return ScissorhandsResult(new_params, new_state, mask, [trim_entry, *log])
