"""FT: fine-tune the original on the retain set only ("catastrophic forgetting").

Warnecke et al., "Machine Unlearning of Features and Labels", NDSS 2023; Golatkar et
al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (the fine-tune baseline); release
setting of SalUn / Scissorhands: lr 0.01, 10 epochs.
"""

from __future__ import annotations

from typing import Any

from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
    epoch_batches,
    fit_objective,
    sgd_chain,
    task_loss,
)
from scissorhands_jax.models.adapters import Model


def finetune(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    lr: float = 0.01,
    epochs: int = 10,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    progress: bool = False,
) -> UnlearnResult:
    r"""Minimises the task loss on the retain set, starting from the original.

    .. math:: \theta \leftarrow \theta - \eta \nabla L(\theta; b_r), \quad b_r \subset D_r

    ``forget`` is only checked, never read: the forget examples cannot reach the loss.
    Epoch e is shuffled by ``fold_in(key, e)``.

    Args:
      model: the :class:`Model`.
      params: the original parameters (not modified).
      model_state: model state.
      retain: retain data, a pytree of arrays.
      forget: forget data (never used).
      key: PRNG key.
      lr, epochs, batch_size, momentum, weight_decay: the SGD schedule.
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`.

    Raises:
      ValueError: bad settings or empty data.
      FloatingPointError: a non-finite epoch loss.
    """
    check_positive(lr=lr)
    check_count(epochs=epochs)
    check_count(1, batch_size=batch_size)
    retain = check_arrays(retain, "retain")
    check_arrays(forget, "forget")
    params, model_state, log = fit_objective(
        task_loss,
        model,
        params,
        model_state,
        batches=lambda e: epoch_batches(retain, batch_size, key, e),
        epochs=epochs,
        tx=sgd_chain(lr, momentum, weight_decay),
        progress=progress,
        desc="ft",
    )
    return UnlearnResult(params, model_state, log)
