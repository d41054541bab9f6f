"""SalUn: random labelling restricted to the weights most salient to the forget loss.

Fan, Liu, Zhang, Wong, Wei & Liu, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024
(arXiv 2310.12508). The saliency is the magnitude of the forget-loss gradient at the
original model, :math:`|\\nabla_\\theta L(\\theta; D_f)|`, thresholded globally to keep the
top ``ratio`` of all entries (release: 0.5); RL then trains only those entries
(release: lr 5e-3, 10 epochs).

The release multiplies the *gradients* by the mask before ``optimizer.step()``, so
coupled weight decay and momentum still move the frozen weights. Here the mask acts
after the whole optimiser chain (:func:`freeze`): frozen entries stay bit-identical.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scissorhands_jax._types import Batch, Mask, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
)
from scissorhands_jax.baselines.random_labels import check_keys, train_random_labels
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model
from scissorhands_jax.saliency import top_k_mask


class FreezeState(NamedTuple):
    """:func:`freeze` keeps no state."""


def freeze() -> optax.GradientTransformationExtraArgs:
    """Zeroes the updates of entries where the mask is False: chain it *last*.

    The mask is the extra argument ``freeze_mask`` of ``update`` (a boolean pytree
    shaped like the params, True = trainable), so one transform serves every mask and
    the mask is an input of a compiled step, not a constant baked into it. Frozen
    updates become ``-0.0``, the one value with ``x + (-0.0) == x`` bit for bit for every
    float ``x`` (``+0.0`` would turn a ``-0.0`` weight into ``+0.0``), so
    ``optax.apply_updates`` leaves frozen entries bit-identical whatever weight decay and
    momentum did upstream.

    Returns:
      An optax ``GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9),
      ...                  freeze())
      >>> p = {"w": jnp.array([1.0, -2.0])}
      >>> u, _ = tx.update({"w": jnp.ones(2)}, tx.init(p), p,
      ...                  freeze_mask={"w": jnp.array([True, False])})
      >>> optax.apply_updates(p, u)["w"].tolist()
      [0.8899999856948853, -2.0]
    """

    def init_fn(params):
        del params
        return FreezeState()

    def update_fn(updates, state, params=None, *, freeze_mask=None, **extra_args):
        del params, extra_args
        if freeze_mask is None:
            raise ValueError("freeze: pass freeze_mask= (a boolean tree) to update().")
        frozen = jax.tree.map(
            lambda u, m: jnp.where(m, u, jnp.asarray(-0.0, u.dtype)), updates, freeze_mask
        )
        return frozen, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
    if not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be a number in (0, 1), got {ratio!r}.")
    forget = check_arrays(forget, "forget")
    total = None
    for batch in array_source(forget, batch_size, shuffle=False)(jax.random.key(0)):
        g = _grad_sum(model, params, model_state, batch)
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    return top_k_mask(jax.tree.map(jnp.abs, total), 1.0 - ratio)


@functools.lru_cache(maxsize=16)
def masked_sgd(lr: float, momentum: float, weight_decay: float):
    """PyTorch-style SGD followed by :func:`freeze` (one object per setting)."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum), freeze()
    )


def salun(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    ratio: float = 0.5,
    lr: float = 5e-3,
    epochs: int = 10,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    input_key: str = "image",
    label_key: str = "label",
    progress: bool = False,
) -> UnlearnResult:
    r"""RL (:func:`~scissorhands_jax.baselines.random_labels`) on the salient weights only.

    .. math::

        \theta \leftarrow \theta - m \odot \mathrm{SGD}_{\eta,\mu,\lambda}
            \left(\nabla L(\theta; D_r \cup \tilde D_f)\right)

    with :math:`m` = :func:`saliency_mask` and the momentum / weight decay inside the
    SGD update, the mask applied after them (:func:`freeze`).

    Args:
      model: the :class:`Model`.
      params: the original parameters (not modified).
      model_state: model state.
      retain: retain data, a pytree of arrays with ``input_key`` and ``label_key``.
      forget: forget data, likewise.
      key: PRNG key (labels and shuffling).
      ratio: fraction of entries trained.
      lr, epochs, batch_size, momentum, weight_decay: the SGD schedule.
      input_key, label_key: the batch entries of inputs and integer labels.
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`; its first log entry counts the masked entries.

    Raises:
      ValueError: bad settings, missing entries or empty data.
      FloatingPointError: a non-finite epoch loss.
    """
    check_positive(lr=lr)
    check_count(epochs=epochs)
    check_count(1, batch_size=batch_size)
    for name, data in (("retain", retain), ("forget", forget)):
        check_keys(check_arrays(data, name), input_key, label_key, name)
    mask = saliency_mask(model, params, model_state, forget, ratio=ratio, batch_size=batch_size)
    params, model_state, log = train_random_labels(
        model,
        params,
        model_state,
        retain=retain,
        forget=forget,
        key=key,
        tx=masked_sgd(lr, momentum, weight_decay),
        tx_args={"freeze_mask": mask},
        epochs=epochs,
        batch_size=batch_size,
        input_key=input_key,
        label_key=label_key,
        progress=progress,
        desc="salun",
    )
    trained = int(sum(jnp.sum(m) for m in jax.tree.leaves(mask)))
    return UnlearnResult(params, model_state, [{"epoch": "mask", "trained": trained}, *log])
