r"""ESD's x_t: the trained model's own DDIM from noise, stopped part-way.

ESD (Gandikota et al., "Erasing Concepts from Diffusion Models", ICCV 2023) needs no
images of the concept. Each step of its training code draws a DDIM step index
:math:`t_{enc}` uniform on ``0..n-1`` (n = 50 DDIM steps), a fresh standard normal start
latent, and denoises it with the model being trained (not the frozen copy), without
gradient, by deterministic DDIM (η = 0) with classifier-free guidance s = 3 on the concept's
prompt, stopping at :math:`t_{enc}`; then a DDPM timestep t uniform on the 1000-step
interval of :math:`t_{enc}`,

.. math:: t \in \big[\mathrm{round}(T\,t_{enc}/n),\; \mathrm{round}(T\,(t_{enc}+1)/n)\big),

and the ESD loss (:func:`~scissorhands_jax.sd.esd_loss`) at that (x_t, t).

Where exactly the code stops, read from its CompVis DDIM sampler (:func:`esd_ddim_plan`,
:func:`esd_ddim_count`): the grid is the leading one, timesteps
:math:`T/n \cdot i + 1`, but the sampler drops its noisiest timestep, so it starts from the
noise at the second one (961 of 1000 with n = 50) and runs the other n - 1 steps to the
end; stopping at :math:`t_{enc} \ge 1` it takes :math:`n - t_{enc}` of them
(:math:`t_{enc} = 0` runs them all). The latent it hands on is then about two DDIM
steps less noisy than the t it is scored at (with n = 50 and :math:`t_{enc} \ge 2`: the
noise level of timestep :math:`20\,t_{enc} - 39` against t in
:math:`[20\,t_{enc}, 20\,t_{enc} + 20)`; for 0 and 1 the finished sample); this is the
method as published, kept as it is.

:func:`partial_ddim` is the sampler: the first ``count`` rows of any DDIM plan (such as
:func:`~scissorhands_jax.sd.ddim_steps`), ``count`` a traced integer, so one compiled
program serves every :math:`t_{enc}`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Params, PRNGKey
from scissorhands_jax.diffusion.model import classifier_free_guidance
from scissorhands_jax.diffusion.schedule import NoiseSchedule
from scissorhands_jax.sd._erasure import ESD_DDIM_STEPS, ESD_START_GUIDANCE, EpsFn
from scissorhands_jax.sd._scheduler import SamplingSteps, ddim_step


@functools.partial(jax.jit, static_argnums=0)
def partial_ddim(
    eps: EpsFn,
    params: Params,
    x_T: jax.Array,
    context: jax.Array,
    uncond: jax.Array,
    steps: SamplingSteps,
    count: jax.Array | int,
    guidance_scale: float | jax.Array,
) -> jax.Array:
    r"""The first ``count`` steps of a DDIM plan from ``x_T``, with classifier-free guidance.

    Step i evaluates the ε-model at ``steps.timesteps[i]`` on the unconditional and the
    conditional halves of one doubled batch, guides,
    :math:`\epsilon = \epsilon_\varnothing + s\,(\epsilon_c - \epsilon_\varnothing)`, and
    takes the deterministic DDIM step (:func:`~scissorhands_jax.sd.ddim_step`) from
    ``steps.alphas_cumprod[i]`` to ``steps.alphas_cumprod_prev[i]``. The loop is a
    ``lax.fori_loop`` with a traced trip count: one compiled program for every ``count``.
    The plan's PLMS fields are not read (a DDIM plan has weights (1, 0, 0, 0)).

    Args:
      eps: the ε-model ``eps(params, x_t, t, context)`` (static).
      params: its parameters.
      x_T: (B, ...) the start latents.
      context: (B, ...) the prompt's conditioning (embeddings, or labels of a
        prompt-conditioned model).
      uncond: the empty prompt's, shaped like ``context``.
      steps: a DDIM plan (:func:`~scissorhands_jax.sd.ddim_steps`, :func:`esd_ddim_plan`).
      count: steps to take, clipped to ``0..len(steps.timesteps)``; 0 returns ``x_T``.
      guidance_scale: s.

    Returns:
      The latents after ``count`` steps, shaped and typed like ``x_T``.
    """
    both = jnp.concatenate([uncond, context])
    n = steps.timesteps.shape[0]

    def body(i, x):
        t = jnp.full((2 * x.shape[0],), steps.timesteps[i], jnp.int32)
        e_uncond, e_cond = jnp.split(eps(params, jnp.concatenate([x, x]), t, both), 2)
        guided = classifier_free_guidance(e_uncond, e_cond, guidance_scale).astype(x.dtype)
        return ddim_step(x, guided, steps.alphas_cumprod[i], steps.alphas_cumprod_prev[i])

    return jax.lax.fori_loop(0, jnp.clip(count, 0, n), body, x_T)


def esd_ddim_plan(schedule: NoiseSchedule, num_steps: int = ESD_DDIM_STEPS) -> SamplingSteps:
    r"""The DDIM plan ESD's sampler runs: the leading grid of ``num_steps`` steps,
    timesteps :math:`r\,i + 1` (r = T // ``num_steps``, i = n-1, …, 0; past the last,
    :math:`\bar\alpha_0`), the first (noisiest) row dropped.

    With SD's schedule it is :func:`~scissorhands_jax.sd.ddim_steps` of
    ``SchedulerConfig()`` without its first row: 49 rows, timesteps 961, 941, …, 1 for
    n = 50. Works on a traced ``schedule`` (the timesteps are constants).

    Raises:
      ValueError: ``num_steps`` outside ``1..T``.
    """
    total = schedule.num_timesteps
    if not isinstance(num_steps, int) or not 1 <= num_steps <= total:
        raise ValueError(f"ddim_steps must be an integer in 1..{total}, got {num_steps!r}.")
    ratio = total // num_steps
    t = np.arange(num_steps - 1)[::-1] * ratio + 1  # the grid's rows 1..n-1
    abar = schedule.alphas_cumprod
    prev = abar[np.maximum(t - ratio, 0)]  # below the grid: the final alpha-bar_0
    m = len(t)
    return SamplingSteps(
        jnp.asarray(t, jnp.int32),
        abar[t].astype(jnp.float32),
        prev.astype(jnp.float32),
        jnp.tile(jnp.asarray([1.0, 0.0, 0.0, 0.0], jnp.float32), (m, 1)),
        jnp.zeros((m,), bool),
        jnp.ones((m,), bool),
    )


def esd_ddim_count(t_enc: jax.Array | int, num_steps: int = ESD_DDIM_STEPS) -> jax.Array:
    r"""Rows of :func:`esd_ddim_plan` ESD's sampler runs before it stops at DDIM index
    ``t_enc``: :math:`n - t_{enc}`, and all :math:`n - 1` for :math:`t_{enc} = 0`
    (its loop breaks after the step whose index is :math:`t_{enc} - 1`, and never for 0).
    """
    t_enc = jnp.asarray(t_enc)
    return jnp.where(t_enc == 0, num_steps - 1, num_steps - t_enc)


def esd_timestep_bounds(num_steps: int, num_timesteps: int) -> tuple[np.ndarray, np.ndarray]:
    r"""``(low, high)``, (n,) int32: the DDPM timesteps of DDIM index :math:`t_{enc}` are
    ``low[t_enc] <= t < high[t_enc]``, :math:`\mathrm{round}(T\,t_{enc}/n)` and
    :math:`\mathrm{round}(T\,(t_{enc}+1)/n)` with Python's rounding (half to even), as ESD's
    code computes them."""
    low = [round(k / num_steps * num_timesteps) for k in range(num_steps)]
    high = [round((k + 1) / num_steps * num_timesteps) for k in range(num_steps)]
    return np.asarray(low, np.int32), np.asarray(high, np.int32)


def esd_x_t(
    eps: EpsFn,
    params: Params,
    schedule: NoiseSchedule,
    context: jax.Array,
    uncond: jax.Array,
    key: PRNGKey,
    *,
    latent_shape: tuple[int, ...],
    ddim_steps: int = ESD_DDIM_STEPS,
    start_guidance: float = ESD_START_GUIDANCE,
) -> tuple[jax.Array, jax.Array]:
    r"""One draw of ESD's ``(x_t, t)`` for a batch of concept prompts.

    :math:`t_{enc}` uniform on ``0..ddim_steps-1`` (one per batch, as ESD's one sampler
    call), a standard normal start latent per example, :func:`partial_ddim` of
    :func:`esd_ddim_count` rows of :func:`esd_ddim_plan` with guidance
    ``start_guidance`` on ``context``; t per example uniform on
    :func:`esd_timestep_bounds` of :math:`t_{enc}`. No gradient flows to ``params``.

    Args:
      eps: the ε-model (ESD samples with the parameters being trained).
      params: its parameters.
      schedule: the training noise schedule.
      context: (B, ...) the concept's conditioning.
      uncond: the empty prompt's, shaped like ``context``.
      key: PRNG key.
      latent_shape: the shape of one latent, (h, w, C).
      ddim_steps: n, the DDIM grid (ESD's 50).
      start_guidance: s of the sampling (ESD's 3).

    Returns:
      ``(x_t, t)``: (B, *latent_shape) float32 latents and (B,) int32 timesteps.
    """
    k_enc, k_noise, k_t = jax.random.split(key, 3)
    batch = jnp.shape(context)[0]
    t_enc = jax.random.randint(k_enc, (), 0, ddim_steps)
    x_T = jax.random.normal(k_noise, (batch, *latent_shape), jnp.float32)
    plan = esd_ddim_plan(schedule, ddim_steps)
    count = esd_ddim_count(t_enc, ddim_steps)
    params = jax.lax.stop_gradient(params)
    x_t = partial_ddim(eps, params, x_T, context, uncond, plan, count, start_guidance)
    low, high = esd_timestep_bounds(ddim_steps, schedule.num_timesteps)
    t = jax.random.randint(k_t, (batch,), jnp.asarray(low)[t_enc], jnp.asarray(high)[t_enc])
    return jax.lax.stop_gradient(x_t), t
