"""ℓ1-sparse: fine-tune on the retain set with an ℓ1 penalty that prunes the weights.

Jia, Liu et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023
(arXiv 2304.04934): sparsity-aware unlearning, FT plus :math:`\\alpha_e \\|\\theta\\|_1`
with :math:`\\alpha` decayed linearly to 0 over the epochs (their best schedule).
Release setting: α 1e-4, lr 0.01, 10 epochs.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
    epoch_batches,
    fit_objective,
    sgd_chain,
    tree_l1,
)
from scissorhands_jax.models.adapters import Model


def l1_objective(model: Model, params: Params, model_state: ModelState, batch: Batch, aux: Any):
    r""":math:`L(\theta; b) + \alpha \|\theta\|_1` with :math:`\alpha` = ``aux``."""
    loss, new_state = model.loss(params, model_state, batch, True)
    return loss + aux * tree_l1(params), new_state


def l1_alpha(alpha: float, epoch: int, epochs: int) -> float:
    r"""The linear schedule :math:`\alpha_e = \alpha (1 - e / E)` of epoch ``e``."""
    return alpha * (1.0 - epoch / epochs)


def l1_sparse(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    alpha: float = 1e-4,
    lr: float = 0.01,
    epochs: int = 10,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    progress: bool = False,
) -> UnlearnResult:
    r"""Fine-tunes on the retain set under a decaying ℓ1 penalty.

    .. math::

        \min_\theta\; L(\theta; D_r) + \alpha_e \|\theta\|_1, \qquad
        \alpha_e = \alpha \left(1 - \frac{e}{E}\right)

    over every entry of every parameter leaf; epoch ``e`` of ``E`` = ``epochs``. With
    ``alpha=0`` it is exactly :func:`~scissorhands_jax.baselines.finetune` (same key,
    same batches). The forget set is never read.

    Args:
      model: the :class:`Model`.
      params: the original parameters (not modified).
      model_state: model state.
      retain: retain data, a pytree of arrays.
      forget: forget data (checked, unused).
      key: PRNG key (shuffling).
      alpha: the ℓ1 weight of the first epoch.
      lr, epochs, batch_size, momentum, weight_decay: the SGD schedule.
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`; each log entry carries its ``alpha``.

    Raises:
      ValueError: bad settings or empty data.
      FloatingPointError: a non-finite epoch loss.
    """
    check_positive(lr=lr)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}.")
    check_count(epochs=epochs)
    check_count(1, batch_size=batch_size)
    retain = check_arrays(retain, "retain")
    check_arrays(forget, "forget")
    params, model_state, log = fit_objective(
        l1_objective,
        model,
        params,
        model_state,
        batches=lambda e: epoch_batches(retain, batch_size, key, e),
        epochs=epochs,
        tx=sgd_chain(lr, momentum, weight_decay),
        aux=lambda e: jnp.float32(l1_alpha(alpha, e, epochs)),
        progress=progress,
        desc="l1_sparse",
    )
    for entry in log:
        entry["alpha"] = l1_alpha(alpha, entry["epoch"], epochs)
    return UnlearnResult(params, model_state, log)
