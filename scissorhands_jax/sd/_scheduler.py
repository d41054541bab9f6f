"""Stable Diffusion's noise schedule and the DDIM step, read from ``scheduler_config.json``.

SD v1 was trained with the "scaled_linear" schedule (β linear in :math:`\\sqrt\\beta` from
0.00085 to 0.012 over 1000 steps). Sampling uses DDIM (Song, Meng & Ermon, ICLR 2021,
Eq. 12, η = 0) on diffusers' "leading" timesteps: with ``n`` steps and ``r = T // n``,
the timesteps are ``r·i + steps_offset`` for ``i = n-1, …, 0``, each followed by
``t - r``; past the first timestep :math:`\\bar\\alpha` is 1 (``set_alpha_to_one``) or
:math:`\\bar\\alpha_0` (SD v1's choice). SD v1.4's own default scheduler is PNDM (PLMS,
Liu et al., ICLR 2022); it is not implemented: its configuration is read for the schedule
and DDIM samples on it.
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


class DDIMSteps(NamedTuple):
    """The sampling plan: timesteps in the order run and the :math:`\\bar\\alpha` pairs.

    Attributes:
      timesteps: (n,) int32, descending.
      alphas_cumprod: (n,) :math:`\\bar\\alpha_t` at each timestep.
      alphas_cumprod_prev: (n,) :math:`\\bar\\alpha` at the step's target ``t - T // n``.
    """

    timesteps: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array


def ddim_steps(config: SchedulerConfig, num_steps: int) -> DDIMSteps:
    """The :class:`DDIMSteps` of ``num_steps`` DDIM steps under ``config``.

    Raises:
      ValueError: ``num_steps`` outside ``1..num_train_timesteps``.
    """
    total = config.num_train_timesteps
    if not isinstance(num_steps, int) or not 1 <= num_steps <= total:
        raise ValueError(f"num_steps must be an integer in 1..{total}, got {num_steps!r}.")
    ratio = total // num_steps
    t = np.arange(num_steps)[::-1] * ratio + config.steps_offset
    abar = np.asarray(config.schedule().alphas_cumprod)
    final = 1.0 if config.set_alpha_to_one else abar[0]
    prev = t - ratio
    abar_prev = np.where(prev >= 0, abar[np.maximum(prev, 0)], final)
    return DDIMSteps(
        jnp.asarray(t, jnp.int32),
        jnp.asarray(abar[t], jnp.float32),
        jnp.asarray(abar_prev, jnp.float32),
    )


def ddim_step(x_t: jax.Array, eps: jax.Array, abar: jax.Array, abar_prev: jax.Array) -> jax.Array:
    r"""One deterministic DDIM step (η = 0):

    .. math::
        \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}}, \qquad
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}}\,\epsilon

    with :math:`\bar\alpha_t` = ``abar`` and :math:`\bar\alpha_{t'}` = ``abar_prev``.
    """
    x0 = (x_t - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
    return jnp.sqrt(abar_prev) * x0 + jnp.sqrt(1.0 - abar_prev) * eps
