from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._memory import forget_memory
from scissorhands_jax._objective import adam_tx, train_objective
from scissorhands_jax._reinit import eligible_mask, leaf_paths
from scissorhands_jax._settings import (
    AdamRepairSettings,
    ProjectionSettings,
    TrimSettings,
    check_choice,
    check_real,
)
from scissorhands_jax._trim import fresh_values
from scissorhands_jax._trim import trim as trim_fn
from scissorhands_jax._types import Mask, Params, PRNGKey
from scissorhands_jax.baselines import UnlearnResult
from scissorhands_jax.data.batching import first_batch
from scissorhands_jax.diffusion.model import DiffusionModel, NoisedSource, diffusion_source
from scissorhands_jax.models.adapters import bind_state
from scissorhands_jax.models.unet import UNET_PRESETS

OBJECTIVES = ("contrast", "anchor")
"""The repair objectives: :math:`L_r - \\lambda L_\\epsilon` and :math:`L_r + \\lambda
L_{anchor}`."""


@dataclasses.dataclass(frozen=True)
class DiffusionObjective:
    r"""Which losses the trim and the repair's forget term use.

    Attributes:
      objective: ``"contrast"``: the forget term is the ε-loss, subtracted
        (:math:`L_r - \lambda L_\epsilon`, the release's class recipe); ``"anchor"``:
        it is the anchor loss, added (:math:`L_r + \lambda L_{anchor}`, its concept
        recipe).
      anchor: the anchor condition of ``"anchor"``: a class index, ``"next"`` or
        ``"random"`` (see :class:`~scissorhands_jax.diffusion.NoisedSource`).
      saliency_guidance: the guidance scale s of the trim's ε-loss (None: the
        conditional prediction; the release's 8.5 is :math:`(1 + 7.5)\epsilon_c -
        7.5\epsilon_\varnothing`).
    """

    objective: str = "contrast"
    anchor: int | str | None = None
    saliency_guidance: float | None = 8.5

    def __post_init__(self):
        check_choice("objective", self.objective, OBJECTIVES)
        if self.objective == "anchor" and self.anchor is None:
            raise ValueError(
                "objective='anchor' needs an anchor: a class index, 'next' or 'random'."
            )
        if self.saliency_guidance is not None:
            object.__setattr__(
                self,
                "saliency_guidance",
                check_real("saliency_guidance", self.saliency_guidance,
                           hint="the guidance scale of the trim's loss, or None"),
            )  # fmt: skip


DEFAULTS: dict[str, Any] = {
    "trim": TrimSettings(sparsity=0.999, reinit="trunc_normal"),
    "projection": ProjectionSettings(projection="none"),
    "repair": AdamRepairSettings(),
    "objective": DiffusionObjective(),
}
"""The release's Stable Diffusion class recipe mapped onto a DDPM: the defaults of
:func:`scissorhands_diffusion` (sparsity 0.999, ``trunc_normal`` re-initialisation,
saliency guidance 8.5, no projection, Adam 2e-5 for 500 steps, :math:`\\lambda` 0.1)."""

GROUP_OF: dict[str, str] = {
    **{name: "trim" for name in ("sparsity", "prune_num", "reinit")},
    **{f.name: "objective" for f in dataclasses.fields(DiffusionObjective)},
    **{f.name: "repair" for f in dataclasses.fields(AdamRepairSettings)},
    **{name: "projection" for name in ("projection", "margin", "eps", "memory_num")},
}
"""The settings a diffusion config section may name (each the field of that name in
its group) and their groups; the trim's and the projection's other fields are not
supported by :func:`scissorhands_diffusion`."""

ANCHOR_RECIPE: dict[str, Any] = {
    "sparsity": 0.995,
    "saliency_guidance": None,
    "reinit": "model",
    "objective": "anchor",
    "anchor": "next",
    "lr": 1e-5,
}
"""What the release's concept recipe changes in :data:`DEFAULTS` (flat names): the
anchor loss towards the next class, sparsity 0.995, the conditional saliency."""

KEYWORDS = {"eligible": "up_attn", "trainable": None}
"""The keywords of :func:`scissorhands_diffusion` that are no settings object, with
their defaults."""


def flat_defaults() -> dict[str, Any]:
    """Every setting (:data:`GROUP_OF`, :data:`KEYWORDS`) with its default."""
    flat = {name: getattr(DEFAULTS[group], name) for name, group in GROUP_OF.items()}
    return {**KEYWORDS, **flat}


def from_flat(**flat: Any) -> dict[str, Any]:
    """The keywords of :func:`scissorhands_diffusion` from flat names (a config
    section): the settings objects, ``eligible`` and ``trainable``; missing names take
    :data:`DEFAULTS`.

    Raises:
      ValueError: an unknown name (listing the known ones) or a bad value.
    """
    unknown = sorted(set(flat) - set(GROUP_OF) - set(KEYWORDS))
    if unknown:
        known = sorted({*GROUP_OF, *KEYWORDS})
        raise ValueError(f"unknown setting(s) {unknown}; the settings are {known}.")
    fields: dict[str, dict[str, Any]] = {group: {} for group in DEFAULTS}
    for name, value in flat.items():
        if name in GROUP_OF:
            fields[GROUP_OF[name]][name] = value
    out = {g: dataclasses.replace(DEFAULTS[g], **values) for g, values in fields.items()}
    return {**out, **{k: flat.get(k, v) for k, v in KEYWORDS.items()}}


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


def retain_forget_loss(retain_loss, forget_loss):
    """One ``loss(params, model_state, batch, train)`` for
    :func:`~scissorhands_jax._objective.train_objective`, whose step evaluates the retain
    term in training mode and the forget term in evaluation mode: ``retain_loss`` for
    the first, ``forget_loss`` for the second (``retain_loss`` itself when both are the
    same function)."""
    if retain_loss is forget_loss:
        return retain_loss

    def loss(params, model_state, batch, train):
        return (retain_loss if train else forget_loss)(params, model_state, batch, train)

    return loss


def _check_settings(trim_s, projection, repair, objective) -> None:
    for name, value, cls in (
        ("trim", trim_s, TrimSettings),
        ("projection", projection, ProjectionSettings),
        ("repair", repair, AdamRepairSettings),
        ("objective", objective, DiffusionObjective),
    ):
        if not isinstance(value, cls):
            raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}.")
    if trim_s.saliency_train_mode:
        raise ValueError(
            "trim.saliency_train_mode is not supported for diffusion models (they have no "
            "running statistics); leave it False."
        )
    if projection.project_every != 1 or projection.project_epochs is not None:
        raise ValueError(
            "projection.project_every and projection.project_epochs are not supported by "
            "the diffusion repair (it projects every step it has a memory); leave them at 1 "
            "and None, and set repair.memory_every for how often the memory is refreshed."
        )


def scissorhands_diffusion(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    trim: TrimSettings = DEFAULTS["trim"],
    projection: ProjectionSettings = DEFAULTS["projection"],
    repair: AdamRepairSettings = DEFAULTS["repair"],
    objective: DiffusionObjective = DEFAULTS["objective"],
    eligible: Any = KEYWORDS["eligible"],
    trainable: str | None = KEYWORDS["trainable"],
    progress: bool = False,
) -> UnlearnResult:
    r"""Scissorhands for a class-conditional diffusion model (see the module docstring).

    Args:
      model: the :class:`DiffusionModel`.
      params: the trained parameters (not modified).
      retain: retain data ``{"image" in [-1, 1], "label"}`` arrays, or a
        :class:`NoisedSource`.
      forget: forget data (the forgotten class's images with their label), likewise.
      key: PRNG key; the run is a pure function of it.
      trim: sparsity (the fraction of all parameters kept by the global top-k; the
        release: 0.999 for Imagenette classes, 0.995 for nudity), ``prune_num`` forget
        batches in the saliency, where fresh values come from (``"model"``,
        ``"trunc_normal"``, the release's class recipe, or ``"torch"``) and the ties.
      projection: the forget-memory projection of the repair (``kind="none"``, the
        release for diffusion, ``"gem"``, ``"orthogonal"``, ``"orthogonal_on_conflict"``),
        its margin, ridge and ``memory_num`` forget batches in the memory.
      repair: Adam's learning rate, the steps (one retain and one forget batch each),
        :math:`\lambda`, the batch size for array data, gradient clipping, the steps
        between memory refreshes and per log entry.
      objective: the repair's forget term (contrast or anchor), the anchor and the
        saliency's guidance scale (:class:`DiffusionObjective`).
      eligible: blocks that may be re-initialised (and projected): a
        :data:`UNET_PRESETS` name, a regex on the path, a predicate, or None for all
        non-normalisation leaves.
      trainable: which leaves the repair updates (regex or preset; None: all, the
        release's ``train_method="full"``).
      progress: show a progress bar.

    Returns:
      An :class:`~scissorhands_jax.baselines.UnlearnResult` with ``model_state={}`` and
      ``mask`` True where an entry was re-initialised; its log starts with an
      ``{"epoch": "trim", ...}`` entry, then the entries of
      :func:`~scissorhands_jax._loop.run_steps`.

    Raises:
      ValueError: bad settings, empty data, no eligible leaf.
      TypeError: a settings argument that is not its dataclass.
      FloatingPointError: a non-finite loss.
    """
    _check_settings(trim, projection, repair, objective)
    retain_src = as_noised(retain, repair.batch_size, "retain")
    forget_src = dataclasses.replace(as_noised(forget, repair.batch_size, "forget"), anchor=None)
    eligible_tree = resolve_eligible(params, eligible)
    grad_mask = path_mask(params, trainable)
    k_trim, k_repair = jax.random.split(key)
    start = time.perf_counter()
    trimmed = trim_fn(
        bind_state(model.guided_loss(objective.saliency_guidance), {}, train=False),
        params,
        forget_src,
        key=k_trim,
        eligible=eligible_tree,
        fresh=fresh_values(trim.reinit, params, lambda k: model.init(k)[0]),
        settings=trim,
    )  # fmt: skip
    mask = trimmed.mask
    n_eligible = sum(
        math.prod(np.shape(x)) if e else 0
        for x, e in zip(jax.tree.leaves(params), jax.tree.leaves(eligible_tree), strict=True)
    )
    trim_entry = {
        "epoch": "trim",
        "reinitialised": count_true(mask),
        "eligible_entries": int(n_eligible),
        "time_s": time.perf_counter() - start,
    }
    tx = adam_tx(repair.grad_clip, projection, eligible_tree)
    memory_fn = None
    if projection.projection != "none":
        memory_loss = bind_state(model, {}, train=False)

        def memory_fn(p, k):
            batches = [first_batch(forget_src, jax.random.fold_in(k, i))
                       for i in range(projection.memory_num)]  # fmt: skip
            return forget_memory(memory_loss, p, batches, eligible=eligible_tree,
                                 cumulative=projection.cumulative_memory)  # fmt: skip

    if objective.objective == "anchor":
        repair_forget = dataclasses.replace(
            forget_src, anchor=objective.anchor, num_classes=model.num_classes
        )
        loss = retain_forget_loss(model.loss, model.anchor_loss)
    else:
        repair_forget, loss = forget_src, model.loss
    new_params, log = train_objective(
        loss,
        trimmed.params,
        retain=retain_src,
        forget=repair_forget,
        key=k_repair,
        steps=repair.steps,
        lr=repair.lr,
        tx=tx,
        w_retain=1.0,
        w_forget=repair.lam,
        sign=-1.0 if objective.objective == "contrast" else 1.0,
        grad_mask=grad_mask,
        memory_fn=memory_fn,
        memory_every=repair.memory_every,
        log_every=repair.log_every,
        progress=progress,
        desc="scissorhands repair",
    )
    return UnlearnResult(new_params, {}, [trim_entry, *log], mask)
