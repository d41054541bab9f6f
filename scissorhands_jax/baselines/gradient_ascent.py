"""GA: gradient ascent on the forget set.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning",
EuroS&P 2022 (gradient ascent as unlearning); release setting of SalUn / Scissorhands:
lr 1e-4, 5 epochs.
"""

from __future__ import annotations

from typing import Any

from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
    epoch_batches,
    fit_objective,
    sgd_chain,
)
from scissorhands_jax.models.adapters import Model


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
    lr: float = 1e-4,
    epochs: int = 5,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    progress: bool = False,
) -> UnlearnResult:
    r"""Ascends the task loss on the forget set.

    .. math:: \theta \leftarrow \theta + \eta \nabla L(\theta; b_f), \quad b_f \subset D_f

    (SGD with momentum and weight decay on :math:`-L`). The retain set is not used.
    The logged ``loss`` is :math:`-L`.

    Args:
      model: the :class:`Model`.
      params: the original parameters (not modified).
      model_state: model state.
      retain: retain data (checked, unused).
      forget: forget data, a pytree of arrays.
      key: PRNG key (shuffling).
      lr, epochs, batch_size, momentum, weight_decay: the SGD schedule.
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`.

    Raises:
      ValueError: bad settings or empty data.
      FloatingPointError: the loss diverged (lower ``lr`` or ``epochs``).
    """
    check_positive(lr=lr)
    check_count(epochs=epochs)
    check_count(1, batch_size=batch_size)
    check_arrays(retain, "retain")
    forget = check_arrays(forget, "forget")
    params, model_state, log = fit_objective(
        negated_loss,
        model,
        params,
        model_state,
        batches=lambda e: epoch_batches(forget, batch_size, key, e),
        epochs=epochs,
        tx=sgd_chain(lr, momentum, weight_decay),
        progress=progress,
        desc="ga",
    )
    return UnlearnResult(params, model_state, log)
