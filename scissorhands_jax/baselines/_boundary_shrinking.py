"""BS: boundary shrinking, relabelling each forget example to its nearest wrong class.

Chen, Gao, Liu, Peng & Wang, "Boundary Unlearning: Rapid Forgetting of Deep Networks
via Shifting the Decision Space", CVPR 2023. A one-step FGSM perturbation of each
forget example (Goodfellow, Shlens & Szegedy, ICLR 2015) crosses the nearest decision
boundary; the class the original model then predicts (other than the true one) is the
new label, and the model is fine-tuned on the forget set under these labels, shrinking
the forgotten region. Release setting: bound 0.1, lr 1e-6, 10 epochs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    LabelledHyperparameters,
    UnlearnResult,
    check_data,
    check_keys,
    check_positive,
    fit_objective,
    in_order,
    relabel,
    task_loss,
)
from scissorhands_jax.models.adapters import Model


@dataclasses.dataclass(frozen=True)
class BoundaryShrinkingHyperparameters(LabelledHyperparameters):
    r"""BS's settings (the release's bound 0.1, lr 1e-6, 10 epochs).

    Attributes:
      bound: the FGSM step :math:`\epsilon` (in input units, > 0).
    """

    bound: float = 0.1
    lr: float = 1e-6
    epochs: int = 10

    def check(self) -> None:
        super().check()
        check_positive(bound=self.bound)


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
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    r"""Fine-tunes on the forget set relabelled to its nearest wrong classes.

    .. math:: \min_\theta\; L(\theta; \{(x, y'(x)) : x \in D_f\})

    with :math:`y'` from :func:`nearest_wrong_labels` at the original model (computed
    once; the release's adversary is a frozen copy of the original, so this is the same).
    The retain set is only checked; epoch e is shuffled by ``fold_in(key, e)``.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`); ``forget`` holds the inputs and
        the integer labels.
      **hyperparameters: fields of :class:`BoundaryShrinkingHyperparameters`.

    Returns:
      An :class:`UnlearnResult`; its first log entry counts the relabelled examples.
    """
    hp = BoundaryShrinkingHyperparameters.of("bs", hyperparameters)
    _, forget = check_data(retain, forget)
    check_keys(forget, "forget", hp.input_key, hp.label_key)
    bound, keys = jnp.float32(hp.bound), {"input_key": hp.input_key, "label_key": hp.label_key}
    labels = np.concatenate(
        [
            np.asarray(nearest_wrong_labels(model, params, model_state, batch, bound, **keys))
            for batch in in_order(forget, hp.batch_size)
        ]
    )
    shrunk = relabel(forget, labels, hp.label_key)
    params, model_state, log = fit_objective(
        task_loss, model, params, model_state, shrunk, key, hp, progress=progress, desc="bs"
    )
    return UnlearnResult(params, model_state, [{"epoch": "relabel", "examples": len(labels)}, *log])
