"""Scissorhands for class-conditional diffusion models (trim, then repair).

Wu & Harandi, ECCV 2024, Sec. 4.3 and the release's ``SD/shs_cls.py`` (class
forgetting) and ``SD/shs_nsfw.py`` (concept forgetting):

1. **Trim.** Connection sensitivity :math:`s = |\\theta \\odot \\sum_b |\\nabla L(\\theta;
   b)||` of the ε-prediction loss on ``prune_num`` forget batches (conditioned on the
   forget class; with ``saliency_guidance`` s the loss is taken on the guided
   prediction, the release uses s = 8.5), one global top-k over all parameters, and
   re-initialisation of the selected entries inside the eligible blocks only (the
   release: the self-attention of two up-path blocks; here the preset ``"up_attn"``).
2. **Repair** with Adam for ``steps`` steps on either

   - ``objective="contrast"``: :math:`L_r - \\lambda L_f` (the release's class recipe), or
   - ``objective="anchor"``: :math:`L_r + \\lambda \\|\\epsilon_\\theta(x_t, c_f) -
     \\mathrm{sg}[\\epsilon_\\theta(x_t, c_a)]\\|^2` (the release's nudity recipe, which
     maps the forget condition onto an anchor condition on the same noisy image),

   optionally under the forget-memory projection of the core method (GEM or
   orthogonal against :math:`\\nabla[-L_f]` on the eligible leaves), which the release
   leaves off for diffusion.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Mask, Params, PRNGKey
from scissorhands_jax.data.batching import first_batch
from scissorhands_jax.diffusion.model import DiffusionModel, NoisedSource, diffusion_source
from scissorhands_jax.memory import forget_memory
from scissorhands_jax.models.adapters import bind_state
from scissorhands_jax.models.unet import UNET_PRESETS
from scissorhands_jax.objective import adam_tx, train_objective
from scissorhands_jax.reinit import eligible_mask, leaf_paths
from scissorhands_jax.settings import ProjectionSettings, TrimSettings, check_choice, check_int
from scissorhands_jax.trimming import fresh_values, trim

OBJECTIVES = ("contrast", "anchor")


class DiffusionUnlearnResult(NamedTuple):
    """What the diffusion unlearning methods return.

    Attributes:
      params: the unlearned parameters (same tree, shapes and dtypes as the input).
      mask: bool tree, True where an entry was re-initialised (Scissorhands) or may be
        updated (SalUn).
      log: a ``"trim"``/``"mask"`` entry, then the entries of
        :func:`~scissorhands_jax.loop.run_steps`.
    """

    params: Params
    mask: Mask
    log: list[dict[str, Any]]


def resolve_eligible(params: Params, eligible: Any) -> Mask:
    """:func:`~scissorhands_jax.eligible_mask` with :data:`UNET_PRESETS` names allowed
    (normalisation layers are never eligible)."""
    if isinstance(eligible, str):
        eligible = UNET_PRESETS.get(eligible, eligible)
    return eligible_mask(params, eligible)


def path_mask(params: Params, pattern: str | None) -> Mask | None:
    """Per-leaf ``jnp.bool_`` scalars, True where ``re.search(pattern, path)`` matches
    (a :data:`UNET_PRESETS` name is allowed); None for ``pattern=None`` (every leaf)."""
    if pattern is None:
        return None
    compiled = re.compile(UNET_PRESETS.get(pattern, pattern))
    flags = [compiled.search(p) is not None for p in leaf_paths(params)]
    if not any(flags):
        raise ValueError(f"the pattern {pattern!r} matches no parameter path.")
    return jax.tree.unflatten(jax.tree.structure(params), [jnp.bool_(f) for f in flags])


def as_noised(data: Any, batch_size: int, name: str) -> NoisedSource:
    """``data`` as a :class:`NoisedSource`: arrays are wrapped, sources passed through."""
    if isinstance(data, NoisedSource):
        return data
    if callable(data):
        raise ValueError(
            f"the {name} source must be a NoisedSource (it adds the noise keys the "
            "diffusion loss draws from): wrap it with NoisedSource(source)."
        )
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(data)}
    if not sizes or sizes == {0}:
        raise ValueError(f"the {name} set is empty.")
    return diffusion_source(data, batch_size)


def count_true(mask: Mask) -> int:
    """How many entries of the bool tree ``mask`` are True."""
    return int(sum(np.sum(m) for m in jax.device_get(jax.tree.leaves(mask))))


def _check(objective, anchor, batch_size, memory_every) -> None:
    check_choice("objective", objective, OBJECTIVES)
    if objective == "anchor" and anchor is None:
        raise ValueError("objective='anchor' needs an anchor: a class index, 'next' or 'random'.")
    check_int("batch_size", batch_size, 1)
    check_int("memory_every", memory_every, 1)


def scissorhands_diffusion(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    eligible: Any = "up_attn",
    sparsity: float = 0.99,
    prune_num: int = 1,
    saliency_guidance: float | None = None,
    reinit: str = "model",
    objective: str = "contrast",
    anchor: int | str | None = None,
    lam: float = 0.1,
    lr: float = 1e-4,
    steps: int = 200,
    batch_size: int = 64,
    grad_clip: float | None = None,
    trainable: str | None = None,
    projection: str = "none",
    margin: float = 0.5,
    eps: float = 1e-3,
    memory_num: int = 1,
    memory_every: int = 50,
    log_every: int = 50,
    progress: bool = False,
) -> DiffusionUnlearnResult:
    r"""Scissorhands for a class-conditional diffusion model (see the module docstring).

    Args:
      model: the :class:`DiffusionModel`.
      params: the trained parameters (not modified).
      retain: retain data ``{"image" in [-1, 1], "label"}`` arrays, or a
        :class:`NoisedSource`.
      forget: forget data (the forgotten class's images with their label), likewise.
      key: PRNG key; the run is a pure function of it.
      eligible: blocks that may be re-initialised (and projected): a
        :data:`UNET_PRESETS` name, a regex on the path, a predicate, or None for all
        non-normalisation leaves.
      sparsity: fraction of all parameters kept by the global top-k (the release: 0.999
        for Imagenette classes, 0.995 for nudity).
      prune_num: forget batches in the saliency.
      saliency_guidance: guidance scale s of the saliency loss (None: the conditional
        prediction; the release: 8.5, i.e. ``(1 + 7.5) ε_c − 7.5 ε_u``).
      reinit: ``"model"``, ``"trunc_normal"`` (the release's class recipe) or ``"torch"``.
      objective: ``"contrast"`` (:math:`L_r - \lambda L_f`) or ``"anchor"``.
      anchor: the anchor condition for ``"anchor"``: a class index, ``"next"`` or
        ``"random"`` (see :class:`NoisedSource`).
      lam: :math:`\lambda`.
      lr: Adam's learning rate.
      steps: repair steps (one retain and one forget batch each).
      batch_size: batch size for array data.
      grad_clip: clip the gradient's global norm (None: off, as the release).
      trainable: which leaves the repair updates (regex or preset; None: all, the
        release's ``train_method="full"``).
      projection: ``"none"`` (the release for diffusion), ``"gem"``, ``"orthogonal"`` or
        ``"orthogonal_on_conflict"``.
      margin, eps: GEM's margin and ridge.
      memory_num: forget batches in the memory.
      memory_every: steps between memory refreshes.
      log_every: steps per log entry.
      progress: show a progress bar.

    Returns:
      A :class:`DiffusionUnlearnResult`.

    Raises:
      ValueError: bad settings, empty data, no eligible leaf.
      FloatingPointError: a non-finite loss.
    """
    trim_settings = TrimSettings(sparsity=sparsity, prune_num=prune_num, reinit=reinit)
    proj = ProjectionSettings(kind=projection, margin=margin, eps=eps, memory_num=memory_num)
    _check(objective, anchor, batch_size, memory_every)
    check_int("steps", steps, 0)
    retain_src = as_noised(retain, batch_size, "retain")
    forget_src = dataclasses.replace(
        as_noised(forget, batch_size, "forget"), guidance=None, anchor=None
    )
    eligible_tree = resolve_eligible(params, eligible)
    grad_mask = path_mask(params, trainable)
    k_trim, k_repair = jax.random.split(key)
    start = time.perf_counter()
    trimmed = trim(
        bind_state(model, {}, train=False),
        params,
        dataclasses.replace(forget_src, guidance=saliency_guidance, anchor=None),
        key=k_trim,
        eligible=eligible_tree,
        fresh=fresh_values(reinit, params, lambda k: model.init(k)[0]),
        settings=trim_settings,
    )
    mask = trimmed.mask
    n_eligible = sum(
        math.prod(np.shape(x)) if e else 0
        for x, e in zip(jax.tree.leaves(params), jax.tree.leaves(eligible_tree), strict=True)
    )
    trim_entry = {
        "phase": "trim",
        "reinitialised": count_true(mask),
        "eligible_entries": int(n_eligible),
        "time_s": time.perf_counter() - start,
    }
    tx = adam_tx(grad_clip, proj, eligible_tree)
    memory_fn = None
    if projection != "none":
        loss_fn = bind_state(model, {}, train=False)

        def memory_fn(p, k):
            batches = [first_batch(forget_src, jax.random.fold_in(k, i)) for i in range(memory_num)]
            return forget_memory(loss_fn, p, batches, eligible=eligible_tree)

    if objective == "anchor":
        num_classes = model.num_classes
        repair_forget = dataclasses.replace(forget_src, anchor=anchor, num_classes=num_classes)
    else:
        repair_forget = forget_src
    new_params, log = train_objective(
        model.loss,
        trimmed.params,
        retain=retain_src,
        forget=repair_forget,
        key=k_repair,
        steps=steps,
        lr=lr,
        tx=tx,
        w_retain=1.0,
        w_forget=lam,
        sign=-1.0 if objective == "contrast" else 1.0,
        grad_mask=grad_mask,
        memory_fn=memory_fn,
        memory_every=memory_every,
        log_every=log_every,
        progress=progress,
        desc="scissorhands repair",
    )
    return DiffusionUnlearnResult(new_params, mask, [trim_entry, *log])
