"""BE: boundary expanding, via a shadow class that absorbs the forget set.

Chen, Gao, Liu, Peng & Wang, "Boundary Unlearning: Rapid Forgetting of Deep Networks
via Shifting the Decision Space", CVPR 2023. The output layer gains one extra (shadow)
neuron; the widened model is fine-tuned to put every forget example in the shadow
class, and the shadow neuron is then pruned, leaving the forget examples scattered over
the remaining classes. Release setting: lr 1e-6, 10 epochs.

No architecture is rebuilt here. For a head :math:`z = hW + b` (a Dense/Linear output
layer with kernel ``(d, C)``) the shadow logit :math:`z_s = h w_s + b_s` needs the
features :math:`h`, which the :class:`Model` record does not expose; but the head is
linear in :math:`W`, so the forward-mode derivative of the logits along a kernel
direction :math:`V` whose first column is :math:`w_s` (others zero) is exactly
:math:`h w_s` in column 0 (:func:`expanded_logits`). One ``jax.jvp`` gives both the
logits and the shadow logit, for any model whose head is affine in its kernel.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from scissorhands_jax._reinit import leaf_paths
from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    SGDHyperparameters,
    UnlearnResult,
    check_data,
    check_keys,
    fit_objective,
    num_classes,
)
from scissorhands_jax.models.adapters import Model, forward


@dataclasses.dataclass(frozen=True)
class BoundaryExpandingHyperparameters(SGDHyperparameters):
    """BE's settings (the release's lr 1e-6, 10 epochs).

    Attributes:
      head: regex naming the output layer; default the last ``(d, C)`` leaf.
      input_key: the batch entry of the inputs.
    """

    lr: float = 1e-6
    epochs: int = 10
    head: str | None = None
    input_key: str = "image"


def head_index(params: Params, classes: int, head: str | None = None) -> int:
    """The position (in ``jax.tree.leaves`` order) of the output layer's kernel.

    The last 2-D leaf whose trailing dimension is ``classes`` (and whose path matches
    the regex ``head``, when given).

    Raises:
      ValueError: when no leaf qualifies.
    """
    paths, leaves = leaf_paths(params), jax.tree.leaves(params)
    pattern = re.compile(head) if head is not None else None
    found = [
        i
        for i, (path, leaf) in enumerate(zip(paths, leaves, strict=True))
        if jnp.ndim(leaf) == 2
        and leaf.shape[-1] == classes
        and (pattern is None or pattern.search(path))
    ]
    if not found:
        raise ValueError(
            f"no 2-D output kernel of shape (d, {classes}) found"
            + (f" matching head={head!r}" if head else "")
            + f" among the parameter paths {paths}; pass head= (a regex on the path)."
        )
    return found[-1]


def expanded_logits(
    model: Model,
    params: Params,
    model_state: ModelState,
    inputs: jax.Array,
    shadow: tuple[jax.Array, jax.Array],
    index: int,
    *,
    train: bool = False,
) -> tuple[jax.Array, ModelState]:
    r"""Logits of the model widened by a shadow class, ``(n, C + 1)``, and the new model
    state.

    .. math::

        [z, z_s], \qquad z = \mathrm{logits}(\theta; x), \qquad
        z_s = \partial_W z\,[V]_{:,0} + b_s = h\, w_s + b_s

    with :math:`V` = zeros except column 0 = :math:`w_s`, and ``shadow`` =
    :math:`(w_s, b_s)` of shapes ``(d,)`` and ``()``; ``index`` locates the kernel
    :math:`W` (:func:`head_index`). ``train`` runs the forward pass in training mode
    (BatchNorm on batch statistics, its running statistics updated in the returned
    state); the head is affine in :math:`W` in either mode.
    """
    leaves, treedef = jax.tree.flatten(params)
    kernel = leaves[index]
    w_s, b_s = shadow

    def logits_of(k):
        swapped = list(leaves)
        swapped[index] = k
        return forward(model, jax.tree.unflatten(treedef, swapped), model_state, inputs, train)

    direction = jnp.zeros_like(kernel).at[:, 0].set(w_s.astype(kernel.dtype))
    (z, new_state), (dz, _) = jax.jvp(logits_of, (kernel,), (direction,))
    return jnp.concatenate([z, (dz[:, 0] + b_s)[:, None]], axis=-1), new_state


@dataclasses.dataclass(frozen=True)
class ShadowObjective:
    """Cross-entropy of the shadow-widened model against the shadow class, on a
    trainable ``{"params", "shadow"}`` (a value: equal settings share a compiled step)."""

    index: int
    input_key: str

    def __call__(self, model, trainable, model_state, batch, aux):
        del aux
        logits, new_state = expanded_logits(
            model, trainable["params"], model_state, batch[self.input_key],
            trainable["shadow"], self.index, train=True,
        )  # fmt: skip
        shadow_class = jnp.full(logits.shape[:1], logits.shape[-1] - 1)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, shadow_class).mean()
        return loss, new_state


def boundary_expanding(
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
    r"""Fine-tunes the shadow-widened model to classify every forget example as the
    shadow class, then drops the shadow neuron.

    .. math:: \min_{\theta, w_s, b_s}\; \mathrm{CE}\left([z, z_s](x),\; C\right),
        \quad x \in D_f

    All parameters train (SGD with momentum and weight decay); the shadow neuron starts
    at PyTorch's default :math:`\mathcal U(\pm 1/\sqrt d)`. The model runs in training
    mode (BatchNorm statistics move, as in a PyTorch ``model.train()`` loop). The retain
    set is only checked.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`); the model's head must be affine
        in a ``(d, C)`` kernel; ``key`` draws the shadow neuron and the shuffles.
      **hyperparameters: fields of :class:`BoundaryExpandingHyperparameters`.

    Returns:
      An :class:`UnlearnResult` (the shadow neuron is dropped).

    Raises:
      ValueError: bad settings, no output kernel, or empty data.
      FloatingPointError: a non-finite loss.
    """
    hp = BoundaryExpandingHyperparameters.of("be", hyperparameters)
    _, forget = check_data(retain, forget)
    check_keys(forget, "forget", hp.input_key)
    classes = num_classes(model, params, model_state, forget[hp.input_key])
    index = head_index(params, classes, hp.head)
    d = jax.tree.leaves(params)[index].shape[0]
    k_init, k_data = jax.random.split(key)
    k_w, k_b = jax.random.split(k_init)
    bound = 1.0 / jnp.sqrt(d)
    shadow = (
        jax.random.uniform(k_w, (d,), jnp.float32, -bound, bound),
        jax.random.uniform(k_b, (), jnp.float32, -bound, bound),
    )
    trainable, model_state, log = fit_objective(
        ShadowObjective(index, hp.input_key), model, {"params": params, "shadow": shadow},
        model_state, forget, k_data, hp, progress=progress, desc="be",
    )  # fmt: skip
    return UnlearnResult(trainable["params"], model_state, log)
