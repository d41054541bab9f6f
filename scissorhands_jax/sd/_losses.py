"""The release's Stable Diffusion losses, as pure functions of parameters and arrays.

Every loss takes the noise ``noise`` and timesteps ``t`` explicitly (draw them with
:func:`draw_noise`), so two losses, or a loss and its hand computation, can share the
same :math:`x_t`. Squared norms are means over the elements (the mean-squared error of
the latent-diffusion code). Latents are the scaled ones the UNet sees
(:func:`encode_latents`).

- :func:`ldm_loss`: :math:`\\lVert\\epsilon - \\epsilon_\\theta(x_t, t, c)\\rVert^2`.
- :func:`anchor_loss` and :func:`nudity_repair_loss`: the nudity recipe, which pulls the
  prediction for the forgotten concept towards that of an anchor prompt.
- :func:`class_saliency_loss` and :func:`class_repair_loss`: the class-forgetting recipe.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax.diffusion.model import classifier_free_guidance
from scissorhands_jax.diffusion.schedule import NoiseSchedule, q_sample

ANCHOR_PROMPT = "a photo of a person wearing clothes"
"""The nudity recipe's anchor concept :math:`c_{clothed}`."""
REPAIR_WEIGHT = 0.1
"""λ of both repair losses."""
SALIENCY_GUIDANCE = 7.5
"""The guidance folded into the class saliency loss: :math:`(1 + 7.5)\\epsilon_c - 7.5
\\epsilon_\\varnothing`."""


def encode_latents(
    vae: Any, vae_params: Any, images: jax.Array, key: jax.Array | None = None
) -> jax.Array:
    r"""Images in [-1, 1] -> the UNet's latents :math:`x_0 = f\,z`, f = ``scaling_factor``.

    ``key=None``: z is the encoder's mean; else a sample
    :math:`z = \mu + e^{\log\sigma^2/2}\,n`, :math:`n \sim N(0, I)` drawn from ``key``.
    """
    mean, logvar = vae.apply({"params": vae_params}, images, method="encode")
    z = mean if key is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    return vae.config.scaling_factor * z


def draw_noise(
    key: jax.Array, latents: jax.Array, num_timesteps: int = 1000
) -> tuple[jax.Array, jax.Array]:
    """``(t, noise)``: timesteps uniform on ``0..num_timesteps-1`` (one per example) and
    standard normal noise shaped like ``latents``."""
    k_t, k_n = jax.random.split(key)
    t = jax.random.randint(k_t, latents.shape[:1], 0, num_timesteps)
    return t, jax.random.normal(k_n, latents.shape, latents.dtype)


def _eps(unet, params, schedule, latents, t, noise, context):
    x_t = q_sample(schedule, latents, t, noise)
    return unet.apply({"params": params}, x_t, t, context)


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def ldm_loss(
    unet: Any,
    params: Any,
    schedule: NoiseSchedule,
    latents: jax.Array,
    context: jax.Array,
    t: jax.Array,
    noise: jax.Array,
) -> jax.Array:
    r"""The latent-diffusion loss with text conditioning (Rombach et al., CVPR 2022, Eq. 2):

    .. math:: L_{LDM} = \lVert \epsilon - \epsilon_\theta(x_t, t, c) \rVert^2, \quad
        x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon

    Args:
      unet: the :class:`~scissorhands_jax.sd.UNet`.
      params: its parameters θ.
      schedule: the training schedule (:meth:`SchedulerConfig.schedule`).
      latents: :math:`x_0`, (B, h, w, C) scaled latents.
      context: c, (B, L, D) text embeddings.
      t: (B,) int timesteps.
      noise: :math:`\epsilon`, like ``latents``.
    """
    return _mse(noise, _eps(unet, params, schedule, latents, t, noise, context))


def anchor_loss(
    unet: Any,
    params: Any,
    schedule: NoiseSchedule,
    latents: jax.Array,
    context: jax.Array,
    anchor_context: jax.Array,
    t: jax.Array,
    noise: jax.Array,
) -> jax.Array:
    r"""The nudity recipe's anchor loss, both terms at the same :math:`x_t`:

    .. math:: \lVert \epsilon_\theta(x_t, t, c_{nude}) -
        \mathrm{sg}\,\epsilon_\theta(x_t, t, c_{clothed}) \rVert^2

    with :math:`c_{nude}` = ``context``, :math:`c_{clothed}` = ``anchor_context`` (the
    embedding of :data:`ANCHOR_PROMPT`) and sg the stop-gradient: only the first branch
    is trained.
    """
    eps = _eps(unet, params, schedule, latents, t, noise, context)
    target = _eps(unet, params, schedule, latents, t, noise, anchor_context)
    return _mse(eps, jax.lax.stop_gradient(target))


def nudity_repair_loss(
    unet: Any,
    params: Any,
    schedule: NoiseSchedule,
    retain: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    forget: tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array],
    weight: float = REPAIR_WEIGHT,
) -> jax.Array:
    r""":math:`L_{LDM}(\text{retain}) + \lambda\,L_{anchor}(\text{forget})`, λ = ``weight``.

    Args:
      retain: ``(latents, context, t, noise)`` for :func:`ldm_loss`.
      forget: ``(latents, context, anchor_context, t, noise)`` for :func:`anchor_loss`.
    """
    return ldm_loss(unet, params, schedule, *retain) + weight * anchor_loss(
        unet, params, schedule, *forget
    )


def class_saliency_loss(
    unet: Any,
    params: Any,
    schedule: NoiseSchedule,
    latents: jax.Array,
    context: jax.Array,
    uncond: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    guidance: float = SALIENCY_GUIDANCE,
) -> jax.Array:
    r"""The class recipe's saliency loss, guidance folded in:

    .. math:: \lVert \epsilon - \big((1 + w)\,\epsilon_\theta(x_t, t, c) -
        w\,\epsilon_\theta(x_t, t, \varnothing)\big) \rVert^2, \quad w = 7.5

    with c = ``context``, :math:`\varnothing` = ``uncond`` (the empty prompt's
    embedding), w = ``guidance``.
    """
    x_t = q_sample(schedule, latents, t, noise)
    both = unet.apply(
        {"params": params},
        jnp.concatenate([x_t, x_t]),
        jnp.concatenate([t, t]),
        jnp.concatenate([uncond, context]),
    )
    eps_uncond, eps_cond = jnp.split(both, 2)
    return _mse(noise, classifier_free_guidance(eps_uncond, eps_cond, 1.0 + guidance))


def class_repair_loss(
    unet: Any,
    params: Any,
    schedule: NoiseSchedule,
    retain: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    forget: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    weight: float = REPAIR_WEIGHT,
) -> jax.Array:
    r""":math:`L_r - \lambda\,L_f`: the LDM loss on the retained classes minus λ =
    ``weight`` times that on the forgotten class (each ``(latents, context, t, noise)``)."""
    return ldm_loss(unet, params, schedule, *retain) - weight * ldm_loss(
        unet, params, schedule, *forget
    )
