"""ℓ1-sparse: fine-tune on the retain set with an ℓ1 penalty that prunes the weights.

Jia, Liu et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023
(arXiv 2304.04934): sparsity-aware unlearning, FT plus :math:`\\alpha_e \\|\\theta\\|_1`
with :math:`\\alpha` decayed linearly to 0 over the epochs (their best schedule).
Release setting: α 1e-4, lr 0.01, 10 epochs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    SGDHyperparameters,
    UnlearnResult,
    check_data,
    check_nonnegative,
    fit_objective,
    tree_l1,
)
from scissorhands_jax.models.adapters import Model


@dataclasses.dataclass(frozen=True)
class L1SparseHyperparameters(SGDHyperparameters):
    """ℓ1-sparse's settings (the release's α 1e-4, lr 0.01, 10 epochs).

    Attributes:
      alpha: the ℓ1 weight of the first epoch (>= 0).
    """

    alpha: float = 1e-4
    lr: float = 0.01
    epochs: int = 10

    def check(self) -> None:
        super().check()
        check_nonnegative(alpha=self.alpha)


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
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    r"""Fine-tunes on the retain set under a decaying ℓ1 penalty.

    .. math::

        \min_\theta\; L(\theta; D_r) + \alpha_e \|\theta\|_1, \qquad
        \alpha_e = \alpha \left(1 - \frac{e}{E}\right)

    over every entry of every parameter leaf; epoch ``e`` of ``E`` = ``epochs``. With
    ``alpha=0`` it is exactly :func:`~scissorhands_jax.baselines._finetune` (same key,
    same batches). The forget set is never read.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`).
      **hyperparameters: fields of :class:`L1SparseHyperparameters`.

    Returns:
      An :class:`UnlearnResult`; each log entry carries its ``alpha``.
    """
    hp = L1SparseHyperparameters.of("l1_sparse", hyperparameters)
    retain, _ = check_data(retain, forget)
    params, model_state, log = fit_objective(
        l1_objective, model, params, model_state, retain, key, hp, progress=progress,
        desc="l1_sparse", aux=lambda e: jnp.float32(l1_alpha(hp.alpha, e, hp.epochs)),
    )  # fmt: skip
    for entry in log:
        entry["alpha"] = l1_alpha(hp.alpha, entry["epoch"], hp.epochs)
    return UnlearnResult(params, model_state, log)
