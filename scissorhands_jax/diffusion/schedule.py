"""The forward (noising) process of DDPM: β schedules, q(x_t | x_0) and the posterior.

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020), Eqs. 4,
6, 7; the cosine schedule of Nichol & Dhariwal, "Improved Denoising Diffusion
Probabilistic Models" (ICML 2021), Eq. 17. Timesteps are 0-based: ``t = 0`` is the
first noising step (the paper's t = 1), ``t = T - 1`` the last.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("linear", "cosine", "scaled_linear")


class NoiseSchedule(NamedTuple):
    r"""Every per-timestep constant of a DDPM, as float32 arrays of length T.

    With :math:`\alpha_t = 1 - \beta_t` and :math:`\bar\alpha_t = \prod_{s \le t}
    \alpha_s` (:math:`\bar\alpha_{-1} = 1`):

    Attributes:
      betas: :math:`\beta_t`.
      alphas_cumprod: :math:`\bar\alpha_t`.
      alphas_cumprod_prev: :math:`\bar\alpha_{t-1}`.
      posterior_variance: :math:`\tilde\beta_t = \beta_t (1 - \bar\alpha_{t-1}) /
        (1 - \bar\alpha_t)`.
      posterior_log_variance: :math:`\log \tilde\beta_t`, with :math:`\tilde\beta_0`
        (which is 0) replaced by :math:`\tilde\beta_1` as in the DDPM code.
      posterior_mean_coef1: :math:`\sqrt{\bar\alpha_{t-1}}\,\beta_t / (1-\bar\alpha_t)`
        (the coefficient of :math:`x_0`).
      posterior_mean_coef2: :math:`\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})/(1-\bar\alpha_t)`
        (the coefficient of :math:`x_t`).
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02):
    """DDPM's linear schedule scaled to T steps: ``linspace(beta_start, beta_end, T)``
    (float64 NumPy; the defaults are the paper's for T = 1000)."""
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def scaled_linear_betas(
    num_timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012
) -> np.ndarray:
    """Latent diffusion's schedule, linear in :math:`\\sqrt\\beta`:
    ``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2`` (float64 NumPy; the defaults
    are Stable Diffusion v1's for T = 1000)."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999):
    r"""Nichol & Dhariwal's cosine schedule:
    :math:`\bar\alpha(t) = f(t)/f(0)`, :math:`f(t) = \cos^2\!\big(\tfrac{t/T + s}{1 + s}
    \tfrac{\pi}{2}\big)`, :math:`\beta_t = \min(1 - \bar\alpha(t+1)/\bar\alpha(t),
    \text{max\_beta})` (float64 NumPy)."""

    def f(t):
        return math.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    return np.array(
        [min(1 - f(i + 1) / f(i), max_beta) for i in range(num_timesteps)], dtype=np.float64
    )


def make_schedule(
    kind: str = "linear",
    num_timesteps: int = 1000,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> NoiseSchedule:
    """Builds a :class:`NoiseSchedule` (computed in float64, stored as float32).

    Args:
      kind: ``"linear"``, ``"cosine"`` or ``"scaled_linear"`` (linear in
        :math:`\\sqrt\\beta`, Stable Diffusion's).
      num_timesteps: T.
      beta_start, beta_end: the linear schedules' end points (of β for ``"linear"``, of
        :math:`\\sqrt\\beta` squared back for ``"scaled_linear"``).

    Raises:
      ValueError: for an unknown kind, T < 2, or betas outside (0, 1).
    """
    if kind not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {kind!r}; choose one of {BETA_SCHEDULES}.")
    if not isinstance(num_timesteps, int) or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}.")
    if kind == "linear":
        betas = linear_betas(num_timesteps, beta_start, beta_end)
    elif kind == "scaled_linear":
        betas = scaled_linear_betas(num_timesteps, beta_start, beta_end)
    else:
        betas = cosine_betas(num_timesteps)
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise ValueError("every beta must lie in (0, 1); check beta_start and beta_end.")
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    post_logvar = np.log(np.concatenate([[post_var[1]], post_var[1:]]))
    coef1 = np.sqrt(abar_prev) * betas / (1.0 - abar)
    coef2 = np.sqrt(alphas) * (1.0 - abar_prev) / (1.0 - abar)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return NoiseSchedule(
        f32(betas),
        f32(abar),
        f32(abar_prev),
        f32(post_var),
        f32(post_logvar),
        f32(coef1),
        f32(coef2),
    )


def _at(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """``values[t]`` reshaped to broadcast against a batch of rank ``ndim``."""
    return values[t].reshape(t.shape + (1,) * (ndim - t.ndim))


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array):
    r"""Draws :math:`x_t \sim q(x_t | x_0)` by reparameterisation (DDPM Eq. 4):

    .. math:: x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon

    Args:
      schedule: the :class:`NoiseSchedule`.
      x0: clean images (B, ...).
      t: integer timesteps (B,).
      noise: :math:`\epsilon`, shaped like ``x0``.
    """
    abar = _at(schedule.alphas_cumprod, t, x0.ndim)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def predict_x0(schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array, eps: jax.Array):
    r""":math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon) / \sqrt{\bar\alpha_t}`,
    the inverse of :func:`q_sample` for a predicted noise."""
    abar = _at(schedule.alphas_cumprod, t, x_t.ndim)
    return (x_t - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)


def q_posterior(schedule: NoiseSchedule, x0: jax.Array, x_t: jax.Array, t: jax.Array):
    r"""Mean, variance and log-variance of :math:`q(x_{t-1} | x_t, x_0)` (DDPM Eqs. 6-7):

    .. math::
        \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t} x_0
          + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t, \qquad
        \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t

    Returns:
      ``(mean, variance, log_variance)``; the last two broadcast against ``x_t``.
    """
    mean = (
        _at(schedule.posterior_mean_coef1, t, x_t.ndim) * x0
        + _at(schedule.posterior_mean_coef2, t, x_t.ndim) * x_t
    )
    return (
        mean,
        _at(schedule.posterior_variance, t, x_t.ndim),
        _at(schedule.posterior_log_variance, t, x_t.ndim),
    )
