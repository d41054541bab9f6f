"""Training a diffusion model, and the baselines for class forgetting: Retrain, FT, SalUn.

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
from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax._types import BatchSource, Params, PRNGKey
from scissorhands_jax.data.batching import first_batch
from scissorhands_jax.diffusion.model import DiffusionModel
from scissorhands_jax.diffusion.unlearn import DiffusionUnlearnResult, as_noised, count_true
from scissorhands_jax.models.adapters import bind_state
from scissorhands_jax.objective import adam_tx, train_objective
from scissorhands_jax.saliency import as_partial, loss_and_grad, top_k_mask


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
      ``(params, log)`` (see :func:`~scissorhands_jax.objective.train_objective`).
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


def retrain_diffusion(
    model: DiffusionModel,
    *,
    retain: Any,
    key: PRNGKey,
    steps: int,
    lr: float = 2e-4,
    batch_size: int = 64,
    grad_clip: float | None = 1.0,
    progress: bool = False,
) -> tuple[Params, list[dict[str, Any]]]:
    """Retrain: a fresh model (``model.init`` with the first key of ``split(key)``) trained
    on the retain data for ``steps`` Adam steps, keyed by the second.

    Returns:
      ``(params, log)``.
    """
    k_init, k_train = jax.random.split(key)
    data = as_noised(retain, batch_size, "retain")
    return train_diffusion(model, model.init(k_init)[0], data, key=k_train, steps=steps, lr=lr,
                           grad_clip=grad_clip, progress=progress, desc="retrain")  # fmt: skip


def finetune_diffusion(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    key: PRNGKey,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 64,
    grad_clip: float | None = 1.0,
    progress: bool = False,
) -> tuple[Params, list[dict[str, Any]]]:
    """FT: the original model fine-tuned on the retain data only.

    Returns:
      ``(params, log)``.
    """
    data = as_noised(retain, batch_size, "retain")
    return train_diffusion(model, params, data, key=key, steps=steps, lr=lr, grad_clip=grad_clip,
                           progress=progress, desc="finetune")  # fmt: skip


def salun_diffusion(
    model: DiffusionModel,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    mask_ratio: float = 0.5,
    saliency_guidance: float | None = 2.0,
    mask_batches: int = 1,
    anchor: int | str = "next",
    alpha: float = 1e-3,
    lr: float = 1e-4,
    steps: int = 500,
    batch_size: int = 64,
    grad_clip: float | None = 1.0,
    log_every: int = 50,
    progress: bool = False,
) -> DiffusionUnlearnResult:
    """SalUn for a class-conditional DDPM (see the module docstring); the defaults are
    SalUn's CIFAR-10 settings (Adam 1e-4, 500 steps, α 1e-3, ratio 0.5, guidance 2).

    Args:
      model: the :class:`DiffusionModel`.
      params: the trained parameters.
      retain, forget: arrays or :class:`NoisedSource` (see
        :func:`~scissorhands_jax.diffusion.scissorhands_diffusion`).
      key: PRNG key.
      mask_ratio: the fraction of entries left out of the mask (0.5: the top half by
        gradient magnitude is updated).
      saliency_guidance: guidance scale of the mask's loss (SalUn: ``cond_scale`` 2).
      mask_batches: forget batches summed in the gradient magnitude.
      anchor: ``"next"``, ``"random"`` or a class index.
      alpha: the retain weight α.
      lr, steps, batch_size, grad_clip, log_every, progress: as for Scissorhands.

    Returns:
      A :class:`DiffusionUnlearnResult` whose ``mask`` is the saliency mask.
    """
    retain_src = as_noised(retain, batch_size, "retain")
    forget_src = as_noised(forget, batch_size, "forget")
    k_mask, k_run = jax.random.split(key)
    start = time.perf_counter()
    source = dataclasses.replace(forget_src, guidance=saliency_guidance, anchor=None)
    loss_fn = as_partial(bind_state(model, {}, train=False))
    grads = None
    for i in range(mask_batches):
        _, g = loss_and_grad(loss_fn, params, first_batch(source, jax.random.fold_in(k_mask, i)))
        g = jax.tree.map(abs, g)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    mask = top_k_mask(grads, mask_ratio)
    entry = {"phase": "mask", "selected": count_true(mask), "time_s": time.perf_counter() - start}
    repair_forget = dataclasses.replace(
        forget_src, guidance=None, anchor=anchor, num_classes=model.num_classes
    )
    new_params, log = train_objective(
        model.loss,
        params,
        retain=retain_src,
        forget=repair_forget,
        key=k_run,
        steps=steps,
        lr=lr,
        tx=adam_tx(grad_clip),
        w_retain=alpha,
        w_forget=1.0,
        sign=1.0,
        grad_mask=mask,
        log_every=log_every,
        progress=progress,
        desc="salun",
    )
    return DiffusionUnlearnResult(new_params, mask, [entry, *log])
