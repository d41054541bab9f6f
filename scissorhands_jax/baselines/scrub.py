"""SCRUB: a student that moves away from the original teacher on the forget set and
stays with it on the retain set.

Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine Unlearning",
NeurIPS 2023 (arXiv 2302.09880). Student and teacher both start as the original model.
Each epoch first takes *max-steps* on the forget set (ascend the distillation KL to
the teacher; only in the first ``max_epochs`` epochs), then *min-steps* on the retain
set (descend :math:`\\gamma\\,\\mathrm{CE} + \\alpha\\,\\mathrm{KL}`), with one SGD
optimiser throughout. Defaults follow the authors' examples: T = 4, γ = 0.99,
α = 0.001, lr 5e-4, 3 epochs with 2 of max-steps, retain batch 128, forget batch 32.
Their step decay of the learning rate (×0.1 after epochs 3, 5 and 9 in their examples)
never acts within 3 epochs and is not implemented; their gradient clipping is not
reproduced.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    UnlearnResult,
    check_arrays,
    check_count,
    check_positive,
    epoch_batches,
    run_pass,
    sgd_chain,
)
from scissorhands_jax.models.adapters import Model, cross_entropy, forward


def distill_kl(student_logits: jax.Array, teacher_logits: jax.Array, temperature) -> jax.Array:
    r"""Hinton's distillation loss, batch mean, times :math:`T^2`.

    .. math::

        \mathrm{KL}_T = \frac{T^2}{n} \sum_{j=1}^n \sum_c p^t_{jc}
            \left(\log p^t_{jc} - \log p^s_{jc}\right), \qquad
        p = \mathrm{softmax}(z / T)
    """
    log_s = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_t = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)
    return jnp.mean(kl) * temperature**2


@functools.cache
def _objectives(input_key: str, label_key: str):
    """(max objective, min objective) reading inputs from ``input_key`` (and the retain
    labels from ``label_key``)."""

    def teacher_logits(model, batch, aux):
        z = model.logits(aux["teacher"], aux["teacher_state"], batch[input_key])
        return jax.lax.stop_gradient(z)

    def maximize(model, params, model_state, batch, aux):
        student, new_state = forward(model, params, model_state, batch[input_key], True)
        return -distill_kl(student, teacher_logits(model, batch, aux), aux["T"]), new_state

    def minimize(model, params, model_state, batch, aux):
        # one training-mode pass serves both terms (the authors' CE and KL on one output)
        student, new_state = forward(model, params, model_state, batch[input_key], True)
        ce = cross_entropy(student, batch[label_key])
        kl = distill_kl(student, teacher_logits(model, batch, aux), aux["T"])
        return aux["gamma"] * ce + aux["alpha"] * kl, new_state

    return maximize, minimize


def scrub(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    lr: float = 5e-4,
    epochs: int = 3,
    max_epochs: int = 2,
    temperature: float = 4.0,
    gamma: float = 0.99,
    alpha: float = 0.001,
    batch_size: int = 128,
    forget_batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    input_key: str = "image",
    label_key: str = "label",
    progress: bool = False,
) -> UnlearnResult:
    r"""Alternating max-steps on the forget set and min-steps on the retain set.

    .. math::

        \text{max-step on } b_f:\; \min_\theta -\mathrm{KL}_T(\theta_o \,\|\, \theta; b_f),
        \qquad
        \text{min-step on } b_r:\; \min_\theta\; \gamma\, \mathrm{CE}(\theta; b_r)
            + \alpha\, \mathrm{KL}_T(\theta_o \,\|\, \theta; b_r)

    with :math:`\theta_o` the original (teacher) and :func:`distill_kl`. The student runs
    in training mode in both steps (BatchNorm uses batch statistics and updates its
    running ones, as the authors' ``model_s.train()``); the teacher in evaluation mode.

    Args:
      model: the :class:`Model`.
      params: the original parameters: teacher and the student's start (not modified).
      model_state: model state.
      retain: retain data, a pytree of arrays with ``input_key`` and the labels.
      forget: forget data, a pytree of arrays with ``input_key``.
      key: PRNG key (shuffling).
      lr: SGD learning rate.
      epochs: epochs of min-steps.
      max_epochs: the first epochs that also take max-steps (``msteps``).
      temperature: the distillation temperature T.
      gamma, alpha: weights of CE and KL in the min-steps.
      batch_size: retain batch size.
      forget_batch_size: forget batch size.
      momentum, weight_decay: SGD settings.
      input_key: the batch entry of the inputs.
      label_key: the batch entry of the retain labels (CE term).
      progress: show progress bars.

    Returns:
      An :class:`UnlearnResult`; one log entry per pass (``phase`` max or min).

    Raises:
      ValueError: bad settings or empty data.
      FloatingPointError: a non-finite pass loss.
    """
    check_positive(lr=lr, temperature=temperature)
    check_count(epochs=epochs, max_epochs=max_epochs)
    check_count(1, batch_size=batch_size, forget_batch_size=forget_batch_size)
    for name, value in (("gamma", gamma), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    retain = check_arrays(retain, "retain")
    forget = check_arrays(forget, "forget")
    for name, data in (("retain", retain), ("forget", forget)):
        if input_key not in data:
            raise ValueError(f"{name} data has no {input_key!r} entry; pass input_key=.")
    if label_key not in retain:
        raise ValueError(f"retain data has no {label_key!r} entry; pass label_key=.")
    maximize, minimize = _objectives(input_key, label_key)
    aux = {
        "teacher": params,
        "teacher_state": model_state,
        "T": jnp.float32(temperature),
        "gamma": jnp.float32(gamma),
        "alpha": jnp.float32(alpha),
    }
    tx = sgd_chain(lr, momentum, weight_decay)
    k_max, k_min = jax.random.split(key)
    carry = (params, model_state, tx.init(params))
    log = []
    for epoch in range(epochs):
        passes = [("min", minimize, epoch_batches(retain, batch_size, k_min, epoch))]
        if epoch < max_epochs:
            passes.insert(
                0, ("max", maximize, epoch_batches(forget, forget_batch_size, k_max, epoch))
            )
        for phase, objective, batches in passes:
            carry, entry = run_pass(
                objective,
                model,
                tx,
                carry,
                batches,
                aux,
                progress=progress,
                desc=f"scrub {phase} {epoch + 1}/{epochs}",
            )
            log.append({"epoch": epoch, "phase": phase, **entry})
    return UnlearnResult(carry[0], carry[1], log)
