"""RL: train on the forget set under random labels, together with the retain set.

Graves, Nagisetty & Ganesh, "Amnesiac Machine Learning", AAAI 2021 (relabelling the
forget data); the variant compared in SalUn (Fan et al., ICLR 2024) and Scissorhands
trains on the union of the relabelled forget set and the retain set, drawing fresh
labels, uniform over all classes, every epoch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
    concat,
    fit_objective,
    num_classes,
    relabel,
    sgd_chain,
    task_loss,
)
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model


def check_keys(data: dict, input_key: str, label_key: str, name: str) -> None:
    """Raises ValueError when ``data`` lacks the input or label entry."""
    missing = [k for k in (input_key, label_key) if k not in data]
    if missing:
        raise ValueError(
            f"{name} data has no {missing} entry; it has {sorted(data)}. Pass "
            "input_key=/label_key= naming the inputs and the integer labels."
        )


def random_label_batches(
    forget: dict,
    retain: dict,
    *,
    key: PRNGKey,
    classes: int,
    batch_size: int,
    label_key: str,
):
    """``batches(epoch)``: the retain set plus the forget set under labels drawn from
    ``fold_in(k_labels, epoch)``, uniform over ``classes``, shuffled together."""
    k_labels, k_shuffle = jax.random.split(key)
    n_f = int(np.shape(forget[label_key])[0])

    def batches(epoch: int):
        labels = jax.random.randint(jax.random.fold_in(k_labels, epoch), (n_f,), 0, classes)
        union = concat(relabel(forget, np.asarray(labels), label_key), retain)
        return array_source(union, batch_size)(jax.random.fold_in(k_shuffle, epoch))

    return batches


def train_random_labels(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    tx: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    input_key: str,
    label_key: str,
    progress: bool,
    desc: str,
    tx_args: dict[str, Any] | None = None,
) -> tuple[Params, ModelState, list[dict[str, Any]]]:
    """The RL loop with any optimiser (SalUn passes a masked one and its mask)."""
    check_count(epochs=epochs)
    check_count(1, batch_size=batch_size)
    retain = check_arrays(retain, "retain")
    forget = check_arrays(forget, "forget")
    check_keys(forget, input_key, label_key, "forget")
    check_keys(retain, input_key, label_key, "retain")
    classes = num_classes(model, params, model_state, forget[input_key])
    batches = random_label_batches(
        forget, retain, key=key, classes=classes, batch_size=batch_size, label_key=label_key
    )
    return fit_objective(
        task_loss,
        model,
        params,
        model_state,
        batches=batches,
        epochs=epochs,
        tx=tx,
        tx_args=tx_args,
        progress=progress,
        desc=desc,
    )


def random_labels(
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
    input_key: str = "image",
    label_key: str = "label",
    progress: bool = False,
) -> UnlearnResult:
    r"""Fine-tunes on :math:`D_r \cup \{(x, \tilde y): (x, y) \in D_f\}`,
    :math:`\tilde y \sim \mathcal U\{0, \dots, C-1\}` redrawn every epoch.

    The release gives no values for RL; the defaults are FT's (lr 0.01, 10 epochs).

    Args:
      model: the :class:`Model`.
      params: the original parameters (not modified).
      model_state: model state.
      retain: retain data, a pytree of arrays with ``input_key`` and ``label_key``.
      forget: forget data, likewise.
      key: PRNG key (labels and shuffling).
      lr, epochs, batch_size, momentum, weight_decay: the SGD schedule.
      input_key, label_key: the batch entries of inputs and integer labels.
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`.

    Raises:
      ValueError: bad settings, missing entries or empty data.
      FloatingPointError: a non-finite epoch loss.
    """
    check_positive(lr=lr)
    params, model_state, log = train_random_labels(
        model,
        params,
        model_state,
        retain=retain,
        forget=forget,
        key=key,
        tx=sgd_chain(lr, momentum, weight_decay),
        epochs=epochs,
        batch_size=batch_size,
        input_key=input_key,
        label_key=label_key,
        progress=progress,
        desc="rl",
    )
    return UnlearnResult(params, model_state, log)
