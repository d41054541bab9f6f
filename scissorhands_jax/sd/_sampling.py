"""Text-to-image sampling: DDIM or PLMS with classifier-free guidance, jitted, data-parallel.

The denoising loop runs inside one jitted program (the steps in ``lax.scan``); each step
evaluates the UNet once on the unconditional and conditional halves side by side (the
unconditional context is the empty prompt's embedding) and takes the DDIM step on the
guided noise (PLMS: on a combination of it and the previous predictions). Each image's
initial latent noise comes from its own key, so an image does not depend on which batch,
or which device, it was drawn in. Given a batch sharding (e.g.
``NamedSharding(mesh, PartitionSpec("data"))``), latents and text embeddings are placed
along the batch axis, the parameters replicated, and jit follows the inputs' shardings:
data parallelism without code for it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax.diffusion.model import classifier_free_guidance
from scissorhands_jax.sd._scheduler import (
    SAMPLERS,
    SamplingSteps,
    SchedulerConfig,
    ddim_step,
    ddim_steps,
    plms_steps,
)

GUIDANCE_SCALE = 7.5
"""SD's default classifier-free guidance scale."""


def encode_prompts(sd: Any, prompts: list[str]) -> jax.Array:
    """(B, 77, D) text embeddings: the text encoder's last hidden state for each prompt."""
    ids = jnp.asarray(sd.tokenizer(list(prompts)))
    return sd.text_encoder.apply({"params": sd.text_params}, ids)


@functools.partial(jax.jit, static_argnames=("unet",))
def denoise(
    unet: Any,
    params: Any,
    latents: jax.Array,
    context: jax.Array,
    uncond: jax.Array,
    steps: SamplingSteps,
    guidance_scale: float | jax.Array,
) -> jax.Array:
    """Runs a sampling plan (DDIM or PLMS) from ``latents`` (x_T; the initial σ is 1).

    Args:
      unet: the :class:`~scissorhands_jax.sd.UNet` (static).
      params: its parameters.
      latents: (B, h, w, C) initial noise.
      context: (B, L, D) prompt embeddings.
      uncond: (B, L, D) the empty prompt's embedding, one per example.
      steps: the :class:`SamplingSteps` plan (:func:`ddim_steps`, :func:`plms_steps`).
      guidance_scale: s of :func:`classifier_free_guidance`.

    Returns:
      The final latents x_0 (scaled, as the UNet sees them).
    """
    both_context = jnp.concatenate([uncond, context])

    def step(carry, plan):
        x, history = carry
        t, abar, abar_prev, weights, from_first, remember = plan
        tt = jnp.full((2 * x.shape[0],), t, jnp.int32)
        eps = unet.apply({"params": params}, jnp.concatenate([x, x]), tt, both_context)
        eps_uncond, eps_cond = jnp.split(eps, 2)
        new = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale).astype(x.dtype)
        combined = weights[0] * new + sum(w * h for w, h in zip(weights[1:], history, strict=True))
        start = jnp.where(from_first, latents, x)
        history = jax.tree.map(
            lambda pushed, kept: jnp.where(remember, pushed, kept), (new, *history[:2]), history
        )
        return (ddim_step(start, combined, abar, abar_prev), history), None

    history = (jnp.zeros_like(latents),) * 3
    (x, _), _ = jax.lax.scan(step, (latents, history), tuple(steps))
    return x


@functools.partial(jax.jit, static_argnames=("vae",))
def decode_images(vae: Any, params: Any, latents: jax.Array) -> jax.Array:
    """Scaled latents -> images in [0, 1], (B, H, W, 3) float32."""
    images = vae.apply({"params": params}, latents / vae.config.scaling_factor, method="decode")
    return jnp.clip((images.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def sampling_steps(sampler: str, scheduler: SchedulerConfig, num_steps: int) -> SamplingSteps:
    """The plan of ``sampler`` (one of :data:`SAMPLERS`).

    Raises:
      ValueError: an unknown sampler or a bad step count.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    return (ddim_steps if sampler == "ddim" else plms_steps)(scheduler, num_steps)


def latent_shape(sd: Any, height: int, width: int) -> tuple[int, int, int]:
    """The UNet's latent shape for ``height`` x ``width`` images.

    Raises:
      ValueError: a size that is not a positive multiple of the autoencoder's factor.
    """
    factor = 2 ** (len(sd.vae.config.block_out_channels) - 1)
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < factor or value % factor:
            raise ValueError(f"{name} must be a positive multiple of {factor}, got {value!r}")
    return height // factor, width // factor, sd.unet.config.in_channels


def initial_latents(keys: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    """(B, *shape) standard normal latents, row i drawn from ``keys[i]`` alone."""
    return jax.vmap(lambda k: jax.random.normal(k, shape))(keys)


def text_to_image(
    sd: Any,
    prompts: list[str],
    keys: jax.Array,
    *,
    num_steps: int = 50,
    guidance_scale: float = GUIDANCE_SCALE,
    scheduler: SchedulerConfig | None = None,
    sampler: str = "ddim",
    height: int = 512,
    width: int = 512,
    sharding: jax.sharding.NamedSharding | None = None,
) -> np.ndarray:
    """One image per prompt, as (B, H, W, 3) uint8.

    Args:
      sd: a :class:`~scissorhands_jax.sd.StableDiffusion` (its tokenizer is needed).
      prompts: B prompts.
      keys: (B,) PRNG keys; image i is a pure function of ``prompts[i]`` and ``keys[i]``.
      num_steps: sampling steps (PLMS evaluates the UNet once more).
      guidance_scale: classifier-free guidance s (1: the conditional prediction alone,
        still evaluated with the unconditional half).
      scheduler: the schedule; SD v1.4's when None (see :func:`read_scheduler_config`).
      sampler: ``"ddim"`` (diffusers' ``DDIMScheduler``, η = 0) or ``"plms"``
        (``PNDMScheduler`` with ``skip_prk_steps``, SD v1.4's default).
      height, width: image size, multiples of the autoencoder's downsampling factor.
      sharding: a batch sharding over a mesh (batch on the first axis); the batch is
        padded to a multiple of its device count and the padding dropped.

    Raises:
      ValueError: mismatched prompts and keys, an unknown sampler, or a size the
        autoencoder cannot reach.
    """
    if sd.tokenizer is None:
        raise ValueError("text_to_image: sd has no tokenizer; load it with load_tokenizer")
    n = len(prompts)
    keys = jnp.asarray(keys)
    if n == 0 or keys.shape[:1] != (n,):
        raise ValueError(f"text_to_image: need one key per prompt, got {keys.shape} for {n}")
    shape = latent_shape(sd, height, width)
    plan = sampling_steps(sampler, scheduler or SchedulerConfig(), num_steps)
    pad = 0 if sharding is None else -n % len(sharding.device_set)
    prompts = [*prompts, *[prompts[-1]] * pad]
    keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)])
    context = encode_prompts(sd, prompts)
    uncond = jnp.broadcast_to(encode_prompts(sd, [""]), context.shape)
    latents = initial_latents(keys, shape)
    unet_params, vae_params = sd.unet_params, sd.vae_params
    if sharding is not None:
        latents, context, uncond = jax.device_put((latents, context, uncond), sharding)
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        unet_params, vae_params = jax.device_put((unet_params, vae_params), replicated)
    latents = denoise(sd.unet, unet_params, latents, context, uncond, plan, guidance_scale)
    images = decode_images(sd.vae, vae_params, latents)
    return np.asarray(jnp.round(images[:n] * 255.0)).astype(np.uint8)
