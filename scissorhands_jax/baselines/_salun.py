"""SalUn: random labelling restricted to the weights most salient to the forget loss.

Fan, Liu, Zhang, Wong, Wei & Liu, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024
(arXiv 2310.12508). The saliency is the magnitude of the forget-loss gradient at the
original model, :math:`|\\nabla_\\theta L(\\theta; D_f)|`, thresholded globally to keep the
top ``ratio`` of all entries (release: 0.5); RL then trains only those entries
(release: lr 5e-3, 10 epochs).

The release multiplies the *gradients* by the mask before ``optimizer.step()``, so
coupled weight decay and momentum still move the frozen weights. Here the mask acts
after the whole optimiser chain (:func:`~scissorhands_jax.baselines.freeze`): frozen
entries stay bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax._saliency import top_k_mask
from scissorhands_jax._types import Batch, Mask, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    LabelledHyperparameters,
    UnlearnResult,
    check_arrays,
    in_order,
)
from scissorhands_jax.baselines._random_labels import labelled_arrays, train_random_labels
from scissorhands_jax.models.adapters import Model


def _check_ratio(ratio: Any) -> None:
    if not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be a number in (0, 1), got {ratio!r}.")


@dataclasses.dataclass(frozen=True)
class SalunHyperparameters(LabelledHyperparameters):
    """SalUn's settings (the release's ratio 0.5, lr 5e-3, 10 epochs).

    Attributes:
      ratio: fraction of entries trained, in (0, 1).
    """

    ratio: float = 0.5
    lr: float = 5e-3
    epochs: int = 10

    def check(self) -> None:
        super().check()
        _check_ratio(self.ratio)


@functools.partial(jax.jit, static_argnames="model")
def _grad_sum(model: Model, params: Params, model_state: ModelState, batch: Batch):
    """Gradient of the batch's summed loss (mean loss times batch size), eval mode."""
    n = jax.tree.leaves(batch)[0].shape[0]
    return jax.grad(lambda p: model.loss(p, model_state, batch, False)[0] * n)(params)


def saliency_mask(
    model: Model,
    params: Params,
    model_state: ModelState,
    forget: dict,
    *,
    ratio: float = 0.5,
    batch_size: int = 256,
) -> Mask:
    r"""SalUn's weight-saliency mask.

    .. math::

        m = \mathbb 1\left[\, |g| > \tau \,\right], \qquad
        g = \nabla_\theta \sum_{x \in D_f} \ell(\theta; x)

    with :math:`\tau` the global threshold that keeps the top ``ratio`` of all entries
    (:func:`scissorhands_jax.top_k_mask` with ``sparsity = 1 - ratio``). The gradient is
    taken in evaluation mode over the whole forget set, in batches of ``batch_size``.

    Args:
      model: the :class:`Model`.
      params: the original parameters.
      model_state: model state.
      forget: forget data, a pytree of arrays.
      ratio: fraction of entries in the mask, in (0, 1).
      batch_size: batch size of the gradient pass.

    Returns:
      A boolean pytree shaped like ``params``.
    """
    _check_ratio(ratio)
    forget = check_arrays(forget, "forget")
    total = None
    for batch in in_order(forget, batch_size):
        g = _grad_sum(model, params, model_state, batch)
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    return top_k_mask(jax.tree.map(jnp.abs, total), 1.0 - ratio)


def salun(
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
    r"""RL (:func:`~scissorhands_jax.baselines._random_labels`) on the salient weights only.

    .. math::

        \theta \leftarrow \theta - m \odot \mathrm{SGD}_{\eta,\mu,\lambda}
            \left(\nabla L(\theta; D_r \cup \tilde D_f)\right)

    with :math:`m` = :func:`saliency_mask` and the momentum / weight decay inside the
    SGD update, the mask applied after them (:func:`~scissorhands_jax.baselines.freeze`).

    Args:
      model, params, model_state, retain, forget, key, progress: as for
        :func:`~scissorhands_jax.baselines._random_labels`.
      **hyperparameters: fields of :class:`SalunHyperparameters`.

    Returns:
      An :class:`UnlearnResult`; its first log entry counts the masked entries.
    """
    hp = SalunHyperparameters.of("salun", hyperparameters)
    retain, forget = labelled_arrays(retain, forget, hp)
    mask = saliency_mask(
        model, params, model_state, forget, ratio=hp.ratio, batch_size=hp.batch_size
    )
    params, model_state, log = train_random_labels(
        model, params, model_state, retain, forget, key, hp, freeze_mask=mask,
        progress=progress, desc="salun",
    )  # fmt: skip
    trained = int(sum(jnp.sum(m) for m in jax.tree.leaves(mask)))
    return UnlearnResult(params, model_state, [{"epoch": "mask", "trained": trained}, *log])
