"""Ancestral DDPM and DDIM sampling with classifier-free guidance, jit-compiled.

DDPM: Ho et al. 2020, Algorithm 2, with :math:`\\hat x_0` clipped to [-1, 1] and the
posterior mean of Eq. 7 (as the DDPM code does). DDIM: Song, Meng & Ermon, "Denoising
Diffusion Implicit Models" (ICLR 2021), Eq. 12, on a uniform sub-sequence of timesteps
(``eta = 0`` is deterministic given x_T; ``eta = 1`` is DDPM-like). Both are pure
functions of ``key``: the initial noise and every step's noise come from it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Params, PRNGKey
from scissorhands_jax.diffusion.model import DiffusionModel, EpsFn, guided_eps
from scissorhands_jax.diffusion.schedule import NoiseSchedule, predict_x0, q_posterior

SAMPLERS = ("ddpm", "ddim")
VARIANCES = ("small", "large")


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """The uniform DDIM sub-sequence ``range(0, T, T // num_steps)`` (ascending)."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must lie in 1..{num_timesteps}, got {num_steps!r}.")
    return np.arange(0, num_timesteps, num_timesteps // num_steps)[:num_steps]


def _eps(eps_fn, params, x, t, labels, scale, null_class):
    tt = jnp.full((x.shape[0],), t, jnp.int32)
    return guided_eps(eps_fn, params, x, tt, labels, None if scale == 1.0 else scale, null_class)


@functools.partial(
    jax.jit, static_argnames=("eps_fn", "shape", "scale", "null_class", "variance", "clip")
)
def _ddpm(eps_fn, params, schedule, key, labels, *, shape, scale, null_class, variance, clip):
    num_t = schedule.betas.shape[0]
    k_init, k_steps = jax.random.split(key)
    x = jax.random.normal(k_init, (labels.shape[0], *shape))

    def body(i, x):
        t = num_t - 1 - i
        tt = jnp.full((x.shape[0],), t, jnp.int32)
        eps = _eps(eps_fn, params, x, t, labels, scale, null_class)
        x0 = predict_x0(schedule, x, tt, eps)
        x0 = jnp.clip(x0, -1.0, 1.0) if clip else x0
        mean, _, logvar = q_posterior(schedule, x0, x, tt)
        if variance == "large":  # σ_t² = β_t, with σ_0² = posterior_variance_1 as in DDPM
            logvar = jnp.log(jnp.where(t == 0, schedule.posterior_variance[1], schedule.betas[t]))
        z = jax.random.normal(jax.random.fold_in(k_steps, t), x.shape)
        return mean + jnp.where(t > 0, jnp.exp(0.5 * logvar), 0.0) * z

    return jax.lax.fori_loop(0, num_t, body, x)


@functools.partial(
    jax.jit, static_argnames=("eps_fn", "shape", "scale", "null_class", "steps", "eta", "clip")
)
def _ddim(eps_fn, params, schedule, key, labels, *, shape, scale, null_class, steps, eta, clip):
    k_init, k_steps = jax.random.split(key)
    x = jax.random.normal(k_init, (labels.shape[0], *shape))
    seq = jnp.asarray(steps, jnp.int32)
    prev = jnp.concatenate([jnp.array([-1], jnp.int32), seq[:-1]])
    abar_all = schedule.alphas_cumprod

    def body(i, x):
        j = seq.shape[0] - 1 - i
        t, t_prev = seq[j], prev[j]
        abar = abar_all[t]
        abar_prev = jnp.where(t_prev >= 0, abar_all[jnp.maximum(t_prev, 0)], 1.0)
        eps = _eps(eps_fn, params, x, t, labels, scale, null_class)
        x0 = (x - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
        if clip:
            x0 = jnp.clip(x0, -1.0, 1.0)
            eps = (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)
        sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
        direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
        z = jax.random.normal(jax.random.fold_in(k_steps, t), x.shape)
        return jnp.sqrt(abar_prev) * x0 + direction + sigma * z

    return jax.lax.fori_loop(0, seq.shape[0], body, x)


def sample(
    model: DiffusionModel | EpsFn,
    params: Params,
    key: PRNGKey,
    labels: jax.Array,
    *,
    schedule: NoiseSchedule | None = None,
    image_shape: tuple[int, int, int] | None = None,
    null_class: int | None = None,
    method: str = "ddim",
    num_steps: int = 50,
    guidance_scale: float = 1.0,
    eta: float = 0.0,
    variance: str = "small",
    clip: bool = True,
    batch_size: int | None = None,
) -> jax.Array:
    r"""Generates one image per label, in [-1, 1] (clipped), shape (N, H, W, C).

    Each step uses the guided noise prediction
    :math:`\epsilon(x_t,\varnothing) + s\,(\epsilon(x_t,c) - \epsilon(x_t,\varnothing))`
    with s = ``guidance_scale`` (1: conditional only, no extra cost).

    Args:
      model: a :class:`DiffusionModel` (schedule, shape and null class taken from it)
        or a bare :data:`EpsFn` together with ``schedule``, ``image_shape`` and
        ``null_class``.
      params: network parameters.
      key: PRNG key; the result is a pure function of it (and of ``batch_size``).
      labels: (N,) int class labels (``null_class`` for unconditional samples).
      method: ``"ddpm"`` (all T ancestral steps) or ``"ddim"`` (``num_steps`` steps).
      num_steps: DDIM steps (ignored by DDPM).
      guidance_scale: s above.
      eta: DDIM's stochasticity (0: deterministic given x_T).
      variance: DDPM's σ_t²: ``"small"`` (the posterior variance β̃_t) or
        ``"large"`` (β_t).
      clip: clip :math:`\hat x_0` to [-1, 1] at every step.
      batch_size: draw in chunks of this many labels (chunk i uses ``fold_in(key, i)``);
        None: all at once.

    Raises:
      ValueError: for an unknown method or variance, or missing schedule information.
    """
    if isinstance(model, DiffusionModel):
        eps_fn, schedule = model.eps, model.schedule
        image_shape, null_class = model.image_shape, model.null_class
    else:
        eps_fn = model
        if schedule is None or image_shape is None or null_class is None:
            raise ValueError("sample: a bare eps_fn needs schedule, image_shape and null_class.")
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {SAMPLERS}.")
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}.")
    labels = jnp.asarray(labels, jnp.int32)
    if batch_size is not None and labels.shape[0] > batch_size:
        chunks = [
            sample(
                eps_fn,
                params,
                jax.random.fold_in(key, i),
                labels[start : start + batch_size],
                schedule=schedule,
                image_shape=image_shape,
                null_class=null_class,
                method=method,
                num_steps=num_steps,
                guidance_scale=guidance_scale,
                eta=eta,
                variance=variance,
                clip=clip,
            )
            for i, start in enumerate(range(0, labels.shape[0], batch_size))
        ]
        return jnp.concatenate(chunks)
    common = dict(
        shape=tuple(image_shape), scale=float(guidance_scale), null_class=int(null_class), clip=clip
    )
    if method == "ddpm":
        x = _ddpm(eps_fn, params, schedule, key, labels, variance=variance, **common)
    else:
        steps = tuple(int(s) for s in ddim_timesteps(schedule.num_timesteps, num_steps))
        x = _ddim(eps_fn, params, schedule, key, labels, steps=steps, eta=float(eta), **common)
    return jnp.clip(x, -1.0, 1.0)
