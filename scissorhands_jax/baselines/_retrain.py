"""Retrain: the gold standard every unlearning method is measured against.

Train a fresh model from scratch on the retain set only, with the schedule of the
original; the forget set never enters. (The reference of every unlearning benchmark,
e.g. Fan et al., "SalUn", ICLR 2024; Wu & Harandi, "Scissorhands", ECCV 2024.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from scissorhands_jax._training import fit
from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    SGDHyperparameters,
    UnlearnResult,
    check_data,
)
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model
from scissorhands_jax.parallel import mesh_of


@dataclasses.dataclass(frozen=True)
class RetrainHyperparameters(SGDHyperparameters):
    """Retrain's SGD schedule (the release's CIFAR retrain: 160 epochs at lr 0.1; its
    milestone schedule is not reproduced: constant lr)."""

    lr: float = 0.1
    epochs: int = 160


def retrain(
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
    """Trains ``model`` from a fresh initialisation on ``retain`` alone.

    ``k_init, k_fit = jax.random.split(key)``; the parameters are ``model.init(k_init)``
    and the training is :func:`scissorhands_jax.fit` on ``array_source(retain,
    batch_size)`` with shuffling key ``k_fit`` and PyTorch-style SGD.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`); ``params`` and ``model_state`` are
        unused (retraining starts afresh) but for their placement: placed on a mesh, the
        retraining runs data-parallel on it; ``forget`` is only checked.
      **hyperparameters: fields of :class:`RetrainHyperparameters`.

    Returns:
      An :class:`UnlearnResult`.
    """
    mesh = mesh_of((params, model_state))
    del params, model_state
    hp = RetrainHyperparameters.of("retrain", hyperparameters)
    retain, _ = check_data(retain, forget)
    k_init, k_fit = jax.random.split(key)
    new_params, new_state = model.init(k_init)
    new_params, new_state, log = fit(
        model.loss, new_params, new_state, array_source(retain, hp.batch_size), key=k_fit,
        epochs=hp.epochs, tx=hp.tx(), progress=progress, desc="retrain", mesh=mesh,
    )  # fmt: skip
    return UnlearnResult(new_params, new_state, log)
