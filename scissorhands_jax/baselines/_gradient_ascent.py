"""GA: gradient ascent on the forget set.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning",
EuroS&P 2022 (gradient ascent as unlearning); release setting of SalUn / Scissorhands:
lr 1e-4, 5 epochs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    SGDHyperparameters,
    UnlearnResult,
    check_data,
    fit_objective,
)
from scissorhands_jax.models.adapters import Model


@dataclasses.dataclass(frozen=True)
class GradientAscentHyperparameters(SGDHyperparameters):
    """GA's SGD schedule (the release's lr 1e-4, 5 epochs)."""

    lr: float = 1e-4
    epochs: int = 5


def negated_loss(model: Model, params: Params, model_state: ModelState, batch: Batch, aux: Any):
    """:math:`-L(\\theta; b)` in training mode: descending it ascends the task loss."""
    del aux
    loss, new_state = model.loss(params, model_state, batch, True)
    return -loss, new_state


def gradient_ascent(
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
    r"""Ascends the task loss on the forget set.

    .. math:: \theta \leftarrow \theta + \eta \nabla L(\theta; b_f), \quad b_f \subset D_f

    (SGD with momentum and weight decay on :math:`-L`). The retain set is only checked.
    The logged ``loss`` is :math:`-L`; epoch e is shuffled by ``fold_in(key, e)``.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`).
      **hyperparameters: fields of :class:`GradientAscentHyperparameters`.

    Returns:
      An :class:`UnlearnResult`.

    Raises:
      ValueError: bad settings or empty data.
      FloatingPointError: the loss diverged (lower ``lr`` or ``epochs``).
    """
    hp = GradientAscentHyperparameters.of("ga", hyperparameters)
    _, forget = check_data(retain, forget)
    params, model_state, log = fit_objective(
        negated_loss, model, params, model_state, forget, key, hp, progress=progress, desc="ga"
    )
    return UnlearnResult(params, model_state, log)
