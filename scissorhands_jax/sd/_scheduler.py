"""Stable Diffusion's noise schedule and the DDIM step, read from ``scheduler_config.json``.

SD v1 was trained with the "scaled_linear" schedule (β linear in :math:`\\sqrt\\beta` from
0.00085 to 0.012 over 1000 steps). Sampling uses DDIM (Song, Meng & Ermon, ICLR 2021,
Eq. 12, η = 0) or PLMS on diffusers' "leading" timesteps: with ``n`` steps and ``r = T // n``,
the timesteps are ``r·i + steps_offset`` for ``i = n-1, …, 0``, each followed by
``t - r``; past the first timestep :math:`\\bar\\alpha` is 1 (``set_alpha_to_one``) or
:math:`\\bar\\alpha_0` (SD v1's choice). SD v1.4's own scheduler is PNDM with
``skip_prk_steps`` (PLMS, Liu et al., ICLR 2022): :func:`plms_steps` (its Runge-Kutta
warm-up steps are not implemented). Both are plans for one loop: PLMS's transfer step
equals DDIM's (the same expression, rearranged), only the noise fed to it differs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax.diffusion.schedule import NoiseSchedule, make_schedule

_SCHEDULERS = ("DDIMScheduler", "PNDMScheduler")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The fields of a diffusers ``scheduler_config.json`` that DDIM sampling uses.

    The defaults are SD v1.4's. Only ε-prediction, unclipped, "leading" timesteps are
    implemented; other values are refused rather than silently sampled differently.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    set_alpha_to_one: bool = False
    steps_offset: int = 1
    prediction_type: str = "epsilon"
    clip_sample: bool = False
    timestep_spacing: str = "leading"

    def __post_init__(self):
        checks = {
            "beta_schedule": (self.beta_schedule, ("scaled_linear", "linear")),
            "prediction_type": (self.prediction_type, ("epsilon",)),
            "clip_sample": (self.clip_sample, (False,)),
            "timestep_spacing": (self.timestep_spacing, ("leading",)),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"scheduler {name}={value!r} is not implemented (only {allowed})")

    def schedule(self) -> NoiseSchedule:
        """The training schedule (:math:`\\beta_t`, :math:`\\bar\\alpha_t`, ...)."""
        return make_schedule(
            self.beta_schedule,
            self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
        )


def read_scheduler_config(folder: str | os.PathLike) -> SchedulerConfig:
    """The :class:`SchedulerConfig` of a diffusers checkpoint folder.

    Reads ``scheduler/scheduler_config.json`` under ``folder`` (or ``folder`` itself when
    it is the ``scheduler/`` folder); SD v1.4's defaults when there is none.

    Raises:
      ValueError: unreadable JSON, a scheduler class other than DDIM or PNDM, or a
        setting that is not implemented.
    """
    folder = os.fspath(folder)
    for path in (
        os.path.join(folder, "scheduler", "scheduler_config.json"),
        os.path.join(folder, "scheduler_config.json"),
    ):
        if os.path.isfile(path):
            break
    else:
        return SchedulerConfig()
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path!r} as JSON: {err}") from err
    kind = raw.get("_class_name", "DDIMScheduler")
    if kind not in _SCHEDULERS:
        raise ValueError(f"{path!r}: scheduler {kind!r} is not supported; only {_SCHEDULERS}")
    if raw.get("trained_betas") is not None:
        raise ValueError(f"{path!r}: trained_betas (a given β list) is not implemented")
    names = {f.name for f in dataclasses.fields(SchedulerConfig)}
    try:
        return SchedulerConfig(**{k: v for k, v in raw.items() if k in names and v is not None})
    except ValueError as err:
        raise ValueError(f"{path!r}: {err}") from err


SAMPLERS = ("ddim", "plms")

# PLMS's noise combinations (Liu et al., Eq. 12 and its lower-order start): weights of the
# newest prediction and the three before it
_PLMS_WEIGHTS = (
    (1.0, 0.0, 0.0, 0.0),
    (0.5, 0.5, 0.0, 0.0),  # the repeated first step: the mean of the first two predictions
    (1.5, -0.5, 0.0, 0.0),
    (23 / 12, -16 / 12, 5 / 12, 0.0),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


class SamplingSteps(NamedTuple):
    """A sampling plan, one row per UNet evaluation, in the order run.

    Step i evaluates the noise at ``timesteps[i]``, combines it with the three previous
    predictions by ``eps_weights[i]`` (newest first) and takes the DDIM step from
    :math:`\bar\alpha` = ``alphas_cumprod[i]`` to ``alphas_cumprod_prev[i]``, starting
    from the current sample, or from the sample before the first step where
    ``from_first[i]`` (PLMS's repeated first step). DDIM: weights (1, 0, 0, 0), never
    from the first.

    Attributes:
      timesteps: (n,) int32, where the UNet is evaluated.
      alphas_cumprod: (n,) :math:`\bar\alpha` the step starts from.
      alphas_cumprod_prev: (n,) :math:`\bar\alpha` it goes to.
      eps_weights: (n, 4) float32.
      from_first: (n,) bool.
      remember: (n,) bool, whether the step's prediction joins the history.
    """

    timesteps: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    eps_weights: jax.Array
    from_first: jax.Array
    remember: jax.Array


def _leading(config: SchedulerConfig, num_steps: int):
    total = config.num_train_timesteps
    if not isinstance(num_steps, int) or not 1 <= num_steps <= total:
        raise ValueError(f"num_steps must be an integer in 1..{total}, got {num_steps!r}.")
    ratio = total // num_steps
    t = np.arange(num_steps)[::-1] * ratio + config.steps_offset
    abar = np.asarray(config.schedule().alphas_cumprod)
    final = 1.0 if config.set_alpha_to_one else abar[0]

    def at(steps):
        return np.where(steps >= 0, abar[np.maximum(steps, 0)], final)

    return t, ratio, at


def _plan(t, start, end, weights, from_first, remember) -> SamplingSteps:
    return SamplingSteps(
        jnp.asarray(t, jnp.int32),
        jnp.asarray(start, jnp.float32),
        jnp.asarray(end, jnp.float32),
        jnp.asarray(weights, jnp.float32),
        jnp.asarray(from_first, bool),
        jnp.asarray(remember, bool),
    )


def ddim_steps(config: SchedulerConfig, num_steps: int) -> SamplingSteps:
    """The plan of ``num_steps`` DDIM steps under ``config`` (diffusers' ``DDIMScheduler``).

    Raises:
      ValueError: ``num_steps`` outside ``1..num_train_timesteps``.
    """
    t, ratio, at = _leading(config, num_steps)
    n = len(t)
    return _plan(t, at(t), at(t - ratio), [_PLMS_WEIGHTS[0]] * n, [False] * n, [True] * n)


def plms_steps(config: SchedulerConfig, num_steps: int) -> SamplingSteps:
    """The plan of PLMS (pseudo linear multistep, Liu et al., "Pseudo Numerical Methods for
    Diffusion Models on Manifolds", ICLR 2022) as diffusers' ``PNDMScheduler`` runs it with
    ``skip_prk_steps=True`` (SD v1's scheduler): ``num_steps + 1`` UNet evaluations, the
    first step taken twice (the second time from the same start, with the mean of the two
    predictions), then Adams-Bashforth combinations of order 2, 3 and 4.

    Raises:
      ValueError: ``num_steps`` outside ``1..num_train_timesteps``.
    """
    if num_steps == 1:  # nothing to combine: diffusers takes the one step alone
        return ddim_steps(config, num_steps)
    t, ratio, at = _leading(config, num_steps)
    evaluated = np.concatenate([t[:1], t[1:2], t[1:]])
    start = np.concatenate([t[:1], t])
    weights = [_PLMS_WEIGHTS[min(i, 4)] for i in range(len(evaluated))]
    from_first = [i == 1 for i in range(len(evaluated))]
    remember = np.logical_not(from_first)
    return _plan(evaluated, at(start), at(start - ratio), weights, from_first, remember)


def ddim_step(x_t: jax.Array, eps: jax.Array, abar: jax.Array, abar_prev: jax.Array) -> jax.Array:
    r"""One deterministic DDIM step (η = 0):

    .. math::
        \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}}, \qquad
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}}\,\epsilon

    with :math:`\bar\alpha_t` = ``abar`` and :math:`\bar\alpha_{t'}` = ``abar_prev``.
    """
    x0 = (x_t - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
    return jnp.sqrt(abar_prev) * x0 + jnp.sqrt(1.0 - abar_prev) * eps
