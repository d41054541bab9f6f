"""Training a diffusion model, and the unlearning methods for class forgetting behind one
interface: Scissorhands (two recipes), FT, SalUn, and the Retrain oracle.

Every method of :data:`DIFFUSION_METHODS` is ``unlearn(model, params, *, retain, forget,
key, progress=False, **hyperparameters) -> UnlearnResult(params, model_state, log,
mask)``, the classifiers' record (:class:`~scissorhands_jax.baselines.UnlearnResult`,
``model_state={}``), its log in the classifiers' schema (phase entries
``{"epoch": "trim" | "mask", ...}``, then one entry per ``log_every`` steps). The
hyperparameters of FT and SalUn are the fields of frozen dataclasses
(:data:`DIFFUSION_HYPERPARAMETERS`) holding their only defaults, those of Scissorhands
its flat setting names (:data:`scissorhands_jax.diffusion.unlearn.GROUP_OF`).

- **Retrain**: a fresh model trained on the retain data only (the gold standard).
- **FT**: the original model fine-tuned on the retain data (catastrophic forgetting).
- **SalUn** (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based
  Weight Saliency", ICLR 2024), its DDPM recipe (``DDPM/runners/diffusion.py``,
  ``saliency_unlearn`` with ``--method rl``): a weight-saliency mask
  :math:`m = [\\,|\\nabla_\\theta L_f| \\ge \\text{its median}\\,]` (gradient magnitude
  of the ε-loss on the forget class, on the guided prediction; ratio 0.5), then Adam on

  .. math::
      L = \\|\\epsilon_\\theta(x_t, c_f) - \\mathrm{sg}[\\epsilon_\\theta(x_t, c')]\\|^2
          + \\alpha L_r

  with :math:`c' = (c_f + 1) \\bmod K` (``anchor="next"``, the code) or a random other
  class (``"random"``, the paper's Eq. 8), and every gradient multiplied by the mask.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax._objective import adam_tx, train_objective
from scissorhands_jax._saliency import as_partial, loss_and_grad, top_k_mask
from scissorhands_jax._settings import check_choice, check_int, check_real
from scissorhands_jax._types import BatchSource, Params, PRNGKey
from scissorhands_jax.baselines import Hyperparameters, UnlearnResult
from scissorhands_jax.data.batching import first_batch
from scissorhands_jax.diffusion.model import DiffusionModel
from scissorhands_jax.diffusion.unlearn import (
    ANCHOR_RECIPE,
    as_noised,
    count_true,
    flat_defaults,
    from_flat,
    retain_forget_loss,
    scissorhands_diffusion,
)
from scissorhands_jax.models.adapters import bind_state


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
      ``(params, log)`` (see :func:`~scissorhands_jax._objective.train_objective`).
    """
    return train_objective(
        model.loss,
        params,
        retain=data,
        key=key,
        steps=steps,
        lr=lr,
        tx=adam_tx(grad_clip),
        log_every=log_every,
        progress=progress,
        desc=desc,
    )


@dataclasses.dataclass(frozen=True)
class AdamHyperparameters(Hyperparameters):
    """Adam steps on the retain data's ε-loss (FT, Retrain).

    Attributes:
      lr: Adam's learning rate.
      steps: optimiser steps.
      batch_size: batch size for array data.
      grad_clip: clip the gradient's global norm (None: off).
    """

    lr: float = 1e-4
    steps: int = 500
    batch_size: int = 128
    grad_clip: float | None = 1.0

    def check(self) -> None:
        check_real("lr", self.lr, positive=True, hint="Adam's learning rate")
        check_int("steps", self.steps, 0)
        check_int("batch_size", self.batch_size, 1)
        if self.grad_clip is not None:
            check_real("grad_clip", self.grad_clip, positive=True, hint="or None for no clip")


@dataclasses.dataclass(frozen=True)
class FinetuneDiffusionHyperparameters(AdamHyperparameters):
    """FT's schedule: SalUn's CIFAR-10 DDPM (Adam 1e-4, clip 1, batch 128), 500 steps."""


@dataclasses.dataclass(frozen=True)
class RetrainDiffusionHyperparameters(AdamHyperparameters):
    """Retrain's schedule: SalUn's CIFAR-10 DDPM training (Adam 2e-4, clip 1, 800k steps)."""

    lr: float = 2e-4
    steps: int = 800_000


@dataclasses.dataclass(frozen=True)
class SalunDiffusionHyperparameters(AdamHyperparameters):
    r"""SalUn's CIFAR-10 DDPM settings (Adam 1e-4, 500 steps, ratio 0.5, guidance 2).

    Attributes:
      mask_ratio: the fraction of entries left out of the mask (0.5: the top half by
        gradient magnitude is updated).
      saliency_guidance: guidance scale of the mask's loss (SalUn: ``cond_scale`` 2).
      mask_batches: forget batches summed in the gradient magnitude.
      anchor: ``"next"``, ``"random"`` or a class index.
      alpha: the retain weight α. SalUn's 1e-3 multiplies a retain loss *summed* over
        3,072 pixel values; with the mean loss here the same balance is 1e-3 · 3072.
      log_every: steps per log entry.
    """

    mask_ratio: float = 0.5
    saliency_guidance: float | None = 2.0
    mask_batches: int = 1
    anchor: int | str = "next"
    alpha: float = 1e-3 * 3072
    log_every: int = 50

    def check(self) -> None:
        super().check()
        check_real("mask_ratio", self.mask_ratio, low=0.0, below=1.0,
                   hint="the fraction of entries left out of the mask")  # fmt: skip
        check_int("mask_batches", self.mask_batches, 1)
        check_real("alpha", self.alpha, low=0.0, hint="the retain weight")
        check_int("log_every", self.log_every, 1)
        if isinstance(self.anchor, str):
            check_choice("anchor", self.anchor, ("next", "random"))
        else:
            check_int("anchor", self.anchor, 0, "a class index, 'next' or 'random'")


def retrain_diffusion(
    model: DiffusionModel,
    params: Params | None = None,
    *,
    retain: Any,
    key: PRNGKey,
    forget: Any = None,
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    """Retrain: a fresh model (``model.init`` with the first key of ``split(key)``) trained
    on the retain data for ``steps`` Adam steps, keyed by the second.

    Args:
      model: the :class:`DiffusionModel`.
      params: ignored (the interface of every method): Retrain starts afresh.
      retain: retain data arrays or a :class:`NoisedSource`.
      key: PRNG key.
      forget: ignored, never read.
      progress: show a progress bar.
      **hyperparameters: fields of :class:`RetrainDiffusionHyperparameters`.

    Returns:
      An :class:`UnlearnResult` (no mask).
    """
    del params, forget
    hp = RetrainDiffusionHyperparameters.of("retrain", hyperparameters)
    k_init, k_train = jax.random.split(key)
    data = as_noised(retain, hp.batch_size, "retain")
    new, log = train_diffusion(model, model.init(k_init)[0], data, key=k_train, steps=hp.steps,
                               lr=hp.lr, grad_clip=hp.grad_clip, progress=progress,
                               desc="retrain")  # fmt: skip
    return UnlearnResult(new, {}, log)


def finetune_diffusion(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    key: PRNGKey,
    forget: Any = None,
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    """FT: the original model fine-tuned on the retain data only.

    Args:
      model, params, retain, key, progress: as for every method.
      forget: ignored, never read.
      **hyperparameters: fields of :class:`FinetuneDiffusionHyperparameters`.

    Returns:
      An :class:`UnlearnResult` (no mask).
    """
    del forget
    hp = FinetuneDiffusionHyperparameters.of("finetune", hyperparameters)
    data = as_noised(retain, hp.batch_size, "retain")
    new, log = train_diffusion(model, params, data, key=key, steps=hp.steps, lr=hp.lr,
                               grad_clip=hp.grad_clip, progress=progress,
                               desc="finetune")  # fmt: skip
    return UnlearnResult(new, {}, log)


def salun_diffusion(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    """SalUn for a class-conditional DDPM (see the module docstring).

    Args:
      model: the :class:`DiffusionModel`.
      params: the trained parameters.
      retain, forget: arrays or :class:`NoisedSource` (see
        :func:`~scissorhands_jax.diffusion.scissorhands_diffusion`).
      key: PRNG key.
      progress: show a progress bar.
      **hyperparameters: fields of :class:`SalunDiffusionHyperparameters`.

    Returns:
      An :class:`UnlearnResult` whose ``mask`` is the saliency mask.
    """
    hp = SalunDiffusionHyperparameters.of("salun", hyperparameters)
    retain_src = as_noised(retain, hp.batch_size, "retain")
    forget_src = as_noised(forget, hp.batch_size, "forget")
    k_mask, k_run = jax.random.split(key)
    start = time.perf_counter()
    source = dataclasses.replace(forget_src, anchor=None)
    loss_fn = as_partial(bind_state(model.guided_loss(hp.saliency_guidance), {}, train=False))
    grads = None
    for i in range(hp.mask_batches):
        _, g = loss_and_grad(loss_fn, params, first_batch(source, jax.random.fold_in(k_mask, i)))
        g = jax.tree.map(abs, g)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    mask = top_k_mask(grads, hp.mask_ratio)
    entry = {"epoch": "mask", "selected": count_true(mask), "time_s": time.perf_counter() - start}
    repair_forget = dataclasses.replace(forget_src, anchor=hp.anchor, num_classes=model.num_classes)
    new_params, log = train_objective(
        retain_forget_loss(model.loss, model.anchor_loss),
        params,
        retain=retain_src,
        forget=repair_forget,
        key=k_run,
        steps=hp.steps,
        lr=hp.lr,
        tx=adam_tx(hp.grad_clip),
        w_retain=hp.alpha,
        w_forget=1.0,
        sign=1.0,
        grad_mask=mask,
        log_every=hp.log_every,
        progress=progress,
        desc="salun",
    )
    return UnlearnResult(new_params, {}, [entry, *log], mask)


def scissorhands_diffusion_from_names(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    """:func:`~scissorhands_jax.diffusion.scissorhands_diffusion` with its settings given
    by their names (a config section: ``sparsity``, ``lr``, ``objective``, ...; see
    :data:`~scissorhands_jax.diffusion.unlearn.GROUP_OF`), the call every method of
    :data:`DIFFUSION_METHODS` takes; the settings not given take the release's class
    recipe."""
    settings = from_flat(**hyperparameters)
    return scissorhands_diffusion(model, params, retain=retain, forget=forget, key=key,
                                  progress=progress, **settings)  # fmt: skip


def scissorhands_anchor_diffusion(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    """:func:`scissorhands_diffusion_from_names` starting from the release's concept
    recipe (:data:`~scissorhands_jax.diffusion.unlearn.ANCHOR_RECIPE`: the anchor loss towards
    the next class)."""
    return scissorhands_diffusion_from_names(model, params, retain=retain, forget=forget,
                                             key=key, progress=progress,
                                             **{**ANCHOR_RECIPE, **hyperparameters})  # fmt: skip


DiffusionMethod = Callable[..., UnlearnResult]

DIFFUSION_METHODS: dict[str, DiffusionMethod] = {
    "scissorhands": scissorhands_diffusion_from_names,
    "scissorhands_anchor": scissorhands_anchor_diffusion,
    "salun": salun_diffusion,
    "finetune": finetune_diffusion,
}
"""Method name (``diffusion-unlearn --method``, a diffusion config's section) ->
``unlearn(model, params, *, retain, forget, key, progress, **hyperparameters)``. The
Retrain oracle (:func:`retrain_diffusion`) is trained by ``diffusion-train``."""

DIFFUSION_HYPERPARAMETERS: dict[str, type[Hyperparameters]] = {
    "salun": SalunDiffusionHyperparameters,
    "finetune": FinetuneDiffusionHyperparameters,
    "retrain": RetrainDiffusionHyperparameters,
}
"""Method name -> the dataclass of its hyperparameters (every method but Scissorhands,
whose settings are flat names, see :func:`method_defaults`)."""


def method_defaults(name: str) -> dict[str, Any]:
    """The hyperparameters of method ``name`` of :data:`DIFFUSION_METHODS` with their
    defaults, as flat keywords (a config section without its seed).

    Raises:
      ValueError: an unknown method.
    """
    if name == "scissorhands":
        return flat_defaults()
    if name == "scissorhands_anchor":
        return {**flat_defaults(), **ANCHOR_RECIPE}
    if name not in DIFFUSION_HYPERPARAMETERS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(DIFFUSION_METHODS)}.")
    return dataclasses.asdict(DIFFUSION_HYPERPARAMETERS[name]())
