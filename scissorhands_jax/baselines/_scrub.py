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

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax._loop import LossGuard
from scissorhands_jax._settings import check_int
from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import (
    LabelledHyperparameters,
    UnlearnResult,
    check_data,
    check_keys,
    check_nonnegative,
    check_positive,
    epoch_batches,
    make_step,
    run_pass,
    start_state,
)
from scissorhands_jax.models.adapters import Model, cross_entropy, forward


@dataclasses.dataclass(frozen=True)
class ScrubHyperparameters(LabelledHyperparameters):
    """SCRUB's settings (the authors' examples).

    Attributes:
      lr: SGD learning rate.
      epochs: epochs of min-steps.
      max_epochs: the first epochs that also take max-steps (``msteps``).
      temperature: the distillation temperature T.
      gamma, alpha: weights of CE and KL in the min-steps.
      batch_size: retain batch size.
      forget_batch_size: forget batch size.
      label_key: the batch entry of the retain labels (CE term).
    """

    lr: float = 5e-4
    epochs: int = 3
    max_epochs: int = 2
    temperature: float = 4.0
    gamma: float = 0.99
    alpha: float = 0.001
    batch_size: int = 128
    forget_batch_size: int = 32

    def check(self) -> None:
        super().check()
        check_positive(temperature=self.temperature)
        check_int("max_epochs", self.max_epochs, 0)
        check_int("forget_batch_size", self.forget_batch_size, 1)
        check_nonnegative(gamma=self.gamma, alpha=self.alpha)


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


@dataclasses.dataclass(frozen=True)
class ScrubObjectives:
    """The max objective (on forget batches) and the min objective (on retain batches),
    reading inputs from ``input_key`` and the retain labels from ``label_key`` (values:
    equal keys share the compiled steps)."""

    input_key: str
    label_key: str
    minimizing: bool

    def __call__(self, model, params, model_state, batch, aux):
        # one training-mode pass serves both terms (the authors' CE and KL on one output)
        student, new_state = forward(model, params, model_state, batch[self.input_key], True)
        teacher = model.logits(aux["teacher"], aux["teacher_state"], batch[self.input_key])
        kl = distill_kl(student, jax.lax.stop_gradient(teacher), aux["T"])
        if not self.minimizing:
            return -kl, new_state
        ce = cross_entropy(student, batch[self.label_key])
        return aux["gamma"] * ce + aux["alpha"] * kl, new_state


def scrub(
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
    r"""Alternating max-steps on the forget set and min-steps on the retain set.

    .. math::

        \text{max-step on } b_f:\; \min_\theta -\mathrm{KL}_T(\theta_o \,\|\, \theta; b_f),
        \qquad
        \text{min-step on } b_r:\; \min_\theta\; \gamma\, \mathrm{CE}(\theta; b_r)
            + \alpha\, \mathrm{KL}_T(\theta_o \,\|\, \theta; b_r)

    with :math:`\theta_o` the original (teacher) and :func:`distill_kl`. The student runs
    in training mode in both steps (BatchNorm uses batch statistics and updates its
    running ones, as the authors' ``model_s.train()``); the teacher in evaluation mode.
    One SGD optimiser serves both steps; ``split(key)`` shuffles the forget and the
    retain batches.

    Args:
      model, params, model_state, retain, forget, key, progress: the interface of every
        baseline (:mod:`scissorhands_jax.baselines`); ``params`` are the teacher and
        the student's start; ``retain`` holds the inputs and labels, ``forget`` the
        inputs.
      **hyperparameters: fields of :class:`ScrubHyperparameters`.

    Returns:
      An :class:`UnlearnResult`; one log entry per pass (``phase`` max or min).
    """
    hp = ScrubHyperparameters.of("scrub", hyperparameters)
    retain, forget = check_data(retain, forget)
    check_keys(retain, "retain", hp.input_key, hp.label_key)
    check_keys(forget, "forget", hp.input_key)
    objectives = {
        phase: ScrubObjectives(hp.input_key, hp.label_key, minimizing=phase == "min")
        for phase in ("max", "min")
    }
    aux = {
        "teacher": params,
        "teacher_state": model_state,
        "T": jnp.float32(hp.temperature),
        "gamma": jnp.float32(hp.gamma),
        "alpha": jnp.float32(hp.alpha),
    }
    tx = hp.tx()  # one optimiser, one state: both phases step it
    k_max, k_min = jax.random.split(key)
    state = start_state(params, model_state, tx)
    steps = {phase: make_step(objectives[phase], model, tx) for phase in objectives}
    log, guards = [], {"max": LossGuard(), "min": LossGuard()}  # one per objective
    for epoch in range(hp.epochs):
        passes = [("min", epoch_batches(retain, hp.batch_size, k_min, epoch))]
        if epoch < hp.max_epochs:
            passes.insert(0, ("max", epoch_batches(forget, hp.forget_batch_size, k_max, epoch)))
        for phase, batches in passes:
            state, entry = run_pass(
                steps[phase], state, batches, aux, progress=progress,
                desc=f"scrub {phase} {epoch + 1}/{hp.epochs}", guard=guards[phase],
            )  # fmt: skip
            log.append({"epoch": epoch, "phase": phase, **entry})
    return UnlearnResult(state.params, state.model_state, log)
