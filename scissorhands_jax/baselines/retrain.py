"""Retrain: the gold standard every unlearning method is measured against.

Train a fresh model from scratch on the retain set only, with the schedule of the
original; the forget set never enters. (The reference of every unlearning benchmark,
e.g. Fan et al., "SalUn", ICLR 2024; Wu & Harandi, "Scissorhands", ECCV 2024.)
"""

from __future__ import annotations

from typing import Any

import jax

from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
    sgd_chain,
)
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model
from scissorhands_jax.training import fit


def retrain(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    lr: float = 0.1,
    epochs: int = 160,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    progress: bool = False,
) -> UnlearnResult:
    """Trains ``model`` from a fresh initialisation on ``retain`` alone.

    ``k_init, k_fit = jax.random.split(key)``; the parameters are ``model.init(k_init)``
    and the training is :func:`scissorhands_jax.fit` on ``array_source(retain,
    batch_size)`` with shuffling key ``k_fit`` and PyTorch-style SGD. The release's
    CIFAR retrain is 160 epochs at lr 0.1 (its milestone schedule is not reproduced:
    constant lr).

    Args:
      model: the :class:`Model`.
      params: the original parameters (unused: retraining starts afresh).
      model_state: the original model state (unused).
      retain: retain data, a pytree of arrays.
      forget: forget data (checked, never used).
      key: PRNG key.
      lr, epochs, batch_size, momentum, weight_decay: the SGD schedule.
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`.

    Raises:
      ValueError: bad settings or empty data.
      FloatingPointError: a non-finite epoch loss.
    """
    del params, model_state
    check_positive(lr=lr)
    check_count(epochs=epochs)
    check_count(1, batch_size=batch_size)
    retain = check_arrays(retain, "retain")
    check_arrays(forget, "forget")
    k_init, k_fit = jax.random.split(key)
    new_params, new_state = model.init(k_init)
    new_params, new_state, log = fit(
        model.loss,
        new_params,
        new_state,
        array_source(retain, batch_size),
        key=k_fit,
        epochs=epochs,
        tx=sgd_chain(lr, momentum, weight_decay),
        progress=progress,
        desc="retrain",
    )
    return UnlearnResult(new_params, new_state, log)
