"""IU / Wfisher: one influence-function step with a WoodFisher inverse-Hessian estimate.

Izzo, Smart, Chaudhuri & Zou, "Approximate Data Deletion from Machine Learning Models",
AISTATS 2021, and Koh & Liang, "Understanding Black-box Predictions via Influence
Functions", ICML 2017 (removing a set moves the optimum by a Newton step on its
gradient); Singh & Alistarh, "WoodFisher: Efficient Second-Order Approximation for
Neural Network Compression", NeurIPS 2020 (the damped empirical Fisher as the Hessian,
inverted with the Woodbury identity). The form of the step follows the Wfisher baseline
of SalUn (Fan et al., ICLR 2024) and Scissorhands (release: α ≈ 10).

Memory and compute: the per-example gradients of the ``fisher_examples`` (m) retain
examples are never stored together; they are recomputed ``chunk_size`` (b) at a time.
Peak memory is two chunks, ``2·b·P`` floats for P parameters (digits CNN, P = 544,522,
b = 32: 140 MB), plus an m × m float64 Gram matrix; the work is about m·(m/b + 3)/2
per-example gradients and m²·P multiply-adds. ResNet-18 (P = 11.2 M) with b = 32 needs
2.9 GB for the chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from scissorhands_jax._settings import check_int
from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    Hyperparameters,
    UnlearnResult,
    check_data,
    check_positive,
    in_order,
    num_examples,
)
from scissorhands_jax.data.batching import permutation
from scissorhands_jax.models.adapters import Model


@dataclasses.dataclass(frozen=True)
class InfluenceHyperparameters(Hyperparameters):
    r"""IU's settings (the release's α ≈ 10).

    Attributes:
      alpha: the step scale (> 0).
      damping: :math:`\lambda` of the Fisher (> 0).
      fisher_examples: m, retain examples in the Fisher (capped at the retain size).
      chunk_size: per-example gradients held at once (memory, see the module docstring).
      batch_size: batch size of the mean-gradient passes.
    """

    alpha: float = 10.0
    damping: float = 1.0
    fisher_examples: int = 1024
    chunk_size: int = 32
    batch_size: int = 256

    def check(self) -> None:
        check_positive(alpha=self.alpha, damping=self.damping)
        for name in ("fisher_examples", "chunk_size", "batch_size"):
            check_int(name, getattr(self, name), 1)


@functools.partial(jax.jit, static_argnames="model")
def per_example_grads(model: Model, params: Params, model_state: ModelState, batch: Batch):
    """``(b, P)``: the flattened gradient of each example's loss (evaluation mode)."""

    def one(example):
        single = jax.tree.map(lambda x: x[None], example)
        grads = jax.grad(lambda p: model.loss(p, model_state, single, False)[0])(params)
        return ravel_pytree(grads)[0]

    return jax.vmap(one)(batch)


@functools.partial(jax.jit, static_argnames="model")
def _grad_sum(model: Model, params: Params, model_state: ModelState, batch: Batch):
    """The flattened gradient of the batch's summed loss (evaluation mode)."""
    n = jax.tree.leaves(batch)[0].shape[0]
    grads = jax.grad(lambda p: model.loss(p, model_state, batch, False)[0] * n)(params)
    return ravel_pytree(grads)[0]


def mean_gradient(
    model: Model, params: Params, model_state: ModelState, data: dict, batch_size: int
) -> jax.Array:
    r""":math:`\bar g = \frac1n \sum_i \nabla \ell(\theta; x_i)`, flattened, in batches."""
    total = None
    for batch in in_order(data, batch_size):
        g = _grad_sum(model, params, model_state, batch)
        total = g if total is None else total + g
    return total / num_examples(data)


def woodfisher_inverse_product(
    model: Model,
    params: Params,
    model_state: ModelState,
    fisher_data: dict,
    vector: jax.Array,
    *,
    damping: float = 1.0,
    chunk_size: int = 32,
) -> jax.Array:
    r"""Applies the inverse of the damped empirical Fisher to ``vector``.

    With :math:`G = [g_1, \dots, g_m] \in \mathbb R^{P \times m}` the per-example
    gradients of ``fisher_data`` and :math:`\lambda` = ``damping``,

    .. math::

        F = \lambda I + \frac1m G G^\top, \qquad
        F^{-1} v = \frac1\lambda \left(v - G\,(m \lambda I + G^\top G)^{-1} G^\top v\right)

    by the Woodbury identity (the closed form of WoodFisher's m rank-one
    Sherman-Morrison updates). :math:`G^\top G` and :math:`G^\top v` are accumulated
    chunk by chunk (in float64 on the host) and :math:`G c` in a second pass, so at most
    two chunks of ``chunk_size`` gradients exist at once.

    Args:
      model: the :class:`Model`.
      params: the parameters at which the gradients are taken.
      model_state: model state.
      fisher_data: the m examples of the Fisher, a pytree of arrays.
      vector: the flattened vector :math:`v` (``ravel_pytree`` order).
      damping: :math:`\lambda > 0`.
      chunk_size: per-example gradients computed at once.

    Returns:
      :math:`F^{-1} v`, flattened, float32.
    """
    m = num_examples(fisher_data)
    starts = list(range(0, m, chunk_size))

    def chunk(i: int) -> jax.Array:
        sl = slice(starts[i], starts[i] + chunk_size)
        return per_example_grads(
            model, params, model_state, jax.tree.map(lambda x: x[sl], fisher_data)
        )

    gram = np.zeros((m, m), np.float64)
    gv = np.zeros(m, np.float64)
    for i in range(len(starts)):
        a = chunk(i)
        si = slice(starts[i], starts[i] + a.shape[0])
        gv[si] = np.asarray(a @ vector, np.float64)
        for j in range(i + 1):
            b = a if j == i else chunk(j)
            sj = slice(starts[j], starts[j] + b.shape[0])
            block = np.asarray(a @ b.T, np.float64)
            gram[si, sj], gram[sj, si] = block, block.T
    coef = np.linalg.solve(m * damping * np.eye(m) + gram, gv)
    g_coef = jnp.zeros_like(vector)
    for i in range(len(starts)):
        a = chunk(i)
        g_coef = g_coef + jnp.asarray(coef[starts[i] : starts[i] + a.shape[0]], a.dtype) @ a
    return (vector - g_coef) / damping


def influence_unlearning(
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
    r"""One influence step away from the forget set, preconditioned by WoodFisher.

    .. math::

        \theta' = \theta + \alpha\, F^{-1} v, \qquad
        v = \frac{n_f}{n}\left(\bar g_f - \bar g_r\right)

    with :math:`\bar g_f`, :math:`\bar g_r` the mean per-example loss gradients over the
    forget and retain sets (evaluation mode), :math:`n = n_f + n_r`, and :math:`F` the
    damped empirical Fisher of ``fisher_examples`` retain examples drawn by ``key``
    (:func:`woodfisher_inverse_product`). At a stationary point of the full training
    loss :math:`n_f \bar g_f = -n_r \bar g_r`, and :math:`\frac{n_f}{n_r} F^{-1}\bar g_f` is
    the first-order change of the optimum when :math:`D_f` is removed (Koh & Liang 2017);
    :math:`\alpha` scales it, as the Wfisher baseline does (release α ≈ 10).

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`); ``model_state`` is only read (the
        step is taken in evaluation mode); ``progress`` is unused (one step).
      **hyperparameters: fields of :class:`InfluenceHyperparameters`.

    Returns:
      An :class:`UnlearnResult` with one log entry (m, the step's norm, seconds).

    Raises:
      ValueError: bad settings or empty data.
      FloatingPointError: a non-finite step.
    """
    del progress
    hp = InfluenceHyperparameters.of("iu", hyperparameters)
    retain, forget = check_data(retain, forget)
    start = time.perf_counter()
    direction, m = influence_direction(model, params, model_state, retain, forget, key, hp)
    return influence_step(params, model_state, direction, hp.alpha, m, start)


def influence_direction(
    model: Model,
    params: Params,
    model_state: ModelState,
    retain: dict,
    forget: dict,
    key: PRNGKey,
    hp: InfluenceHyperparameters,
) -> tuple[jax.Array, int]:
    r""":math:`F^{-1} v` of :func:`influence_unlearning`, flattened, and m, the number of
    Fisher examples: everything of the step but its scale :math:`\alpha` (``hp.alpha``
    is not read), so steps of several :math:`\alpha` can share it."""
    n_f, n_r = num_examples(forget), num_examples(retain)
    g_f = mean_gradient(model, params, model_state, forget, hp.batch_size)
    g_r = mean_gradient(model, params, model_state, retain, hp.batch_size)
    v = (n_f / (n_f + n_r)) * (g_f - g_r)
    pick = np.sort(permutation(key, n_r)[: min(hp.fisher_examples, n_r)])
    fisher = jax.tree.map(lambda x: x[pick], retain)
    direction = woodfisher_inverse_product(
        model, params, model_state, fisher, v, damping=hp.damping, chunk_size=hp.chunk_size
    )
    return direction, int(pick.size)


def influence_step(
    params: Params,
    model_state: ModelState,
    direction: jax.Array,
    alpha: float,
    fisher_examples: int,
    start: float,
) -> UnlearnResult:
    r""":math:`\theta + \alpha\,` ``direction`` (:func:`influence_direction`) as the
    result of :func:`influence_unlearning`; its log entry's seconds count from ``start``
    (a ``time.perf_counter()`` value).

    Raises:
      FloatingPointError: a non-finite step.
    """
    step = alpha * direction
    norm = float(jnp.linalg.norm(step))
    if not np.isfinite(norm):
        raise FloatingPointError(
            f"iu: the influence step is not finite (norm {norm}); raise the damping."
        )
    flat, unravel = ravel_pytree(params)
    new_params = unravel(flat + step.astype(flat.dtype))
    entry = {
        "epoch": "influence",
        "fisher_examples": fisher_examples,
        "step_norm": norm,
        "time_s": time.perf_counter() - start,
    }
    return UnlearnResult(new_params, model_state, [entry])
