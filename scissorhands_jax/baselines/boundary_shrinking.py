"""BS: boundary shrinking, relabelling each forget example to its nearest wrong class.

Chen, Gao, Liu, Peng & Wang, "Boundary Unlearning: Rapid Forgetting of Deep Networks
via Shifting the Decision Space", CVPR 2023. A one-step FGSM perturbation of each
forget example (Goodfellow, Shlens & Szegedy, ICLR 2015) crosses the nearest decision
boundary; the class the original model then predicts (other than the true one) is the
new label, and the model is fine-tuned on the forget set under these labels, shrinking
the forgotten region. Release setting: bound 0.1, lr 1e-6, 10 epochs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
    epoch_batches,
    fit_objective,
    relabel,
    sgd_chain,
    task_loss,
)
from scissorhands_jax.baselines.random_labels import check_keys
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model


@functools.partial(jax.jit, static_argnames=("model", "input_key", "label_key"))
def nearest_wrong_labels(
    model: Model,
    params: Params,
    model_state: ModelState,
    batch: Batch,
    bound: jax.Array,
    *,
    input_key: str = "image",
    label_key: str = "label",
) -> jax.Array:
    r"""The nearest wrong class of each example, found by one FGSM step.

    .. math::

        x' = x + \epsilon\, \mathrm{sign}\, \nabla_x L(\theta; x, y), \qquad
        y' = \arg\max_{c \ne y} z_c(\theta; x')

    with :math:`\epsilon` = ``bound`` and evaluation-mode logits :math:`z`.
    """
    x, y = batch[input_key], batch[label_key]
    grad_x = jax.grad(lambda v: model.loss(params, model_state, {**batch, input_key: v}, False)[0])(
        x
    )
    logits = model.logits(params, model_state, x + bound * jnp.sign(grad_x))
    true = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    return jnp.argmax(jnp.where(true, -jnp.inf, logits), axis=-1).astype(y.dtype)


def boundary_shrinking(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    bound: float = 0.1,
    lr: float = 1e-6,
    epochs: int = 10,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    input_key: str = "image",
    label_key: str = "label",
    progress: bool = False,
) -> UnlearnResult:
    r"""Fine-tunes on the forget set relabelled to its nearest wrong classes.

    .. math:: \min_\theta\; L(\theta; \{(x, y'(x)) : x \in D_f\})

    with :math:`y'` from :func:`nearest_wrong_labels` at the original model (computed
    once; the release's adversary is a frozen copy of the original, so this is the same).
    The retain set is unused.

    Args:
      model: the :class:`Model`.
      params: the original parameters (not modified).
      model_state: model state.
      retain: retain data (checked, unused).
      forget: forget data, a pytree of arrays with ``input_key`` and ``label_key``.
      key: PRNG key (shuffling).
      bound: the FGSM step :math:`\epsilon` (in input units).
      lr, epochs, batch_size, momentum, weight_decay: the SGD schedule.
      input_key, label_key: the batch entries of inputs and integer labels.
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`; its first log entry counts the relabelled examples.

    Raises:
      ValueError: bad settings, missing entries or empty data.
      FloatingPointError: a non-finite epoch loss.
    """
    check_positive(lr=lr, bound=bound)
    check_count(epochs=epochs)
    check_count(1, batch_size=batch_size)
    check_arrays(retain, "retain")
    forget = check_arrays(forget, "forget")
    check_keys(forget, input_key, label_key, "forget")
    labels = np.concatenate(
        [
            np.asarray(
                nearest_wrong_labels(
                    model,
                    params,
                    model_state,
                    batch,
                    jnp.float32(bound),
                    input_key=input_key,
                    label_key=label_key,
                )
            )
            for batch in array_source(forget, batch_size, shuffle=False)(jax.random.key(0))
        ]
    )
    shrunk = relabel(forget, labels, label_key)
    params, model_state, log = fit_objective(
        task_loss,
        model,
        params,
        model_state,
        batches=lambda e: epoch_batches(shrunk, batch_size, key, e),
        epochs=epochs,
        tx=sgd_chain(lr, momentum, weight_decay),
        progress=progress,
        desc="bs",
    )
    return UnlearnResult(params, model_state, [{"epoch": "relabel", "examples": len(labels)}, *log])
