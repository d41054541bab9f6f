"""FT: fine-tune the original on the retain set only ("catastrophic forgetting").

Warnecke et al., "Machine Unlearning of Features and Labels", NDSS 2023; Golatkar et
al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (the fine-tune baseline); release
setting of SalUn / Scissorhands: lr 0.01, 10 epochs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    SGDHyperparameters,
    UnlearnResult,
    check_data,
    fit_objective,
    task_loss,
)
from scissorhands_jax.models.adapters import Model


@dataclasses.dataclass(frozen=True)
class FinetuneHyperparameters(SGDHyperparameters):
    """FT's SGD schedule (the release's lr 0.01, 10 epochs)."""

    lr: float = 0.01
    epochs: int = 10


def finetune(
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
    r"""Minimises the task loss on the retain set, starting from the original.

    .. math:: \theta \leftarrow \theta - \eta \nabla L(\theta; b_r), \quad b_r \subset D_r

    ``forget`` is only checked, never read: the forget examples cannot reach the loss.
    Epoch e is shuffled by ``fold_in(key, e)``.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`).
      **hyperparameters: fields of :class:`FinetuneHyperparameters`.

    Returns:
      An :class:`UnlearnResult`.
    """
    hp = FinetuneHyperparameters.of("ft", hyperparameters)
    retain, _ = check_data(retain, forget)
    params, model_state, log = fit_objective(
        task_loss, model, params, model_state, retain, key, hp, progress=progress, desc="ft"
    )
    return UnlearnResult(params, model_state, log)
