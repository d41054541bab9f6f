"""RL: train on the forget set under random labels, together with the retain set.

Graves, Nagisetty & Ganesh, "Amnesiac Machine Learning", AAAI 2021 (relabelling the
forget data); the variant compared in SalUn (Fan et al., ICLR 2024) and Scissorhands
trains on the union of the relabelled forget set and the retain set, drawing fresh
labels, uniform over all classes, every epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from scissorhands_jax._types import Mask, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    LabelledHyperparameters,
    UnlearnResult,
    check_data,
    check_keys,
    concat,
    fit_objective,
    num_classes,
    relabel,
    task_loss,
)
from scissorhands_jax.models.adapters import Model


@dataclasses.dataclass(frozen=True)
class RandomLabelsHyperparameters(LabelledHyperparameters):
    """RL's settings. The release gives no values for RL; the defaults are FT's (lr 0.01,
    10 epochs)."""

    lr: float = 0.01
    epochs: int = 10


def relabelled_union(
    forget: dict, retain: dict, key: PRNGKey, classes: int, label_key: str
) -> Callable[[int], dict]:
    """``data(epoch)``: the forget set under labels drawn from ``fold_in(key, epoch)``,
    uniform over ``classes``, followed by the retain set."""
    n_f = int(np.shape(forget[label_key])[0])

    def data(epoch: int) -> dict:
        labels = jax.random.randint(jax.random.fold_in(key, epoch), (n_f,), 0, classes)
        return concat(relabel(forget, np.asarray(labels), label_key), retain)

    return data


def labelled_arrays(retain: Any, forget: Any, hp: LabelledHyperparameters):
    """``(retain, forget)`` checked as arrays holding the inputs and the labels."""
    retain, forget = check_data(retain, forget)
    check_keys(forget, "forget", hp.input_key, hp.label_key)
    check_keys(retain, "retain", hp.input_key, hp.label_key)
    return retain, forget


def train_random_labels(
    model: Model,
    params: Params,
    model_state: ModelState,
    retain: dict,
    forget: dict,
    key: PRNGKey,
    hp: LabelledHyperparameters,
    *,
    freeze_mask: Mask | None = None,
    progress: bool,
    desc: str,
) -> tuple[Params, ModelState, list[dict[str, Any]]]:
    """The RL loop on checked data (:func:`labelled_arrays`); SalUn passes its mask."""
    classes = num_classes(model, params, model_state, forget[hp.input_key])
    k_labels, k_shuffle = jax.random.split(key)
    union = relabelled_union(forget, retain, k_labels, classes, hp.label_key)
    return fit_objective(
        task_loss, model, params, model_state, union, k_shuffle, hp, freeze_mask=freeze_mask,
        progress=progress, desc=desc,
    )  # fmt: skip


def random_labels(
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
    r"""Fine-tunes on :math:`D_r \cup \{(x, \tilde y): (x, y) \in D_f\}`,
    :math:`\tilde y \sim \mathcal U\{0, \dots, C-1\}` redrawn every epoch.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`); both data sets hold the inputs
        and the integer labels; ``key`` draws the labels and the shuffles.
      **hyperparameters: fields of :class:`RandomLabelsHyperparameters`.

    Returns:
      An :class:`UnlearnResult`.
    """
    hp = RandomLabelsHyperparameters.of("rl", hyperparameters)
    retain, forget = labelled_arrays(retain, forget, hp)
    params, model_state, log = train_random_labels(
        model, params, model_state, retain, forget, key, hp, progress=progress, desc="rl"
    )
    return UnlearnResult(params, model_state, log)
