"""The release's two Stable Diffusion recipes as settings, and SD as a diffusion model.

The unlearning method for diffusion models
(:func:`~scissorhands_jax.diffusion.scissorhands_diffusion`) sees a model whose
condition is a label. For text-to-image the conditions of a recipe are a handful of
prompts, fixed for the run: :func:`prompt_conditioned_model` turns the UNet into such a
model whose label ``i`` is the embedding of prompt ``i`` and whose null label (the last
row) is the empty prompt's, so the method's ε-loss, guided ε-loss and anchor loss are the
release's :func:`~scissorhands_jax.sd.ldm_loss`, :func:`~scissorhands_jax.sd.class_saliency_loss`
and :func:`~scissorhands_jax.sd.anchor_loss`.

- :data:`NUDITY_RECIPE`: saliency of the conditional LDM loss on the forget images (10
  batches), global top-k at sparsity 0.995, Kaiming-uniform re-initialisation of the
  self-attention of the release's ``output_blocks.4`` and ``.7``, then Adam 1e-5 on
  :math:`L_{LDM}(\\text{retain}) + 0.1\\,\\lVert\\epsilon_\\theta(x_t, c_{nude}) -
  \\mathrm{sg}\\,\\epsilon_\\theta(x_t, c_{clothed})\\rVert^2`, batch 16, 5 epochs.
- :data:`CLASS_RECIPE`: saliency of :math:`\\lVert\\epsilon - (8.5\\,\\epsilon_c -
  7.5\\,\\epsilon_\\varnothing)\\rVert^2` (10 batches), sparsity 0.999, truncated-normal
  (0.02) re-initialisation of the same layers, then Adam 2e-5 on :math:`L_r - 0.1\\,L_f`,
  batch 8, 3 epochs.

Neither projects the repair's gradient. :func:`tiny_stable_diffusion` builds a random SD
with the same layer names at toy sizes, so that a recipe runs end to end on a CPU.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax.diffusion.model import DiffusionModel, eps_diffusion_model
from scissorhands_jax.diffusion.schedule import NoiseSchedule
from scissorhands_jax.sd._clip import CLIPTextEncoder
from scissorhands_jax.sd._config import TextConfig, UNetConfig, VAEConfig
from scissorhands_jax.sd._load import StableDiffusion
from scissorhands_jax.sd._tokenizer import BOS, EOS, CLIPTokenizer, bytes_to_unicode
from scissorhands_jax.sd._unet import REINIT_SELF_ATTENTION, UNet
from scissorhands_jax.sd._vae import AutoencoderKL

SELF_ATTENTION_REINIT = "|".join(re.escape(p) + "/" for p in REINIT_SELF_ATTENTION)
"""The parameter-path regex of the leaves the recipes may re-initialise: the ``attn1`` of
the release's ``output_blocks.4`` and ``output_blocks.7``."""

NUDITY_RECIPE: dict[str, Any] = {
    "eligible": SELF_ATTENTION_REINIT,
    "sparsity": 0.995,
    "prune_num": 10,
    "saliency_guidance": None,
    "reinit": "torch",
    "objective": "anchor",
    "anchor": 0,
    "projection": "none",
    "lr": 1e-5,
    "lam": 0.1,
    "batch_size": 16,
    "grad_clip": None,
}
"""The nudity recipe in the flat settings of
:func:`~scissorhands_jax.diffusion.unlearn.from_flat`. ``anchor`` 0 is the label of the
anchor prompt ("a photo of a person wearing clothes"), the first condition of the recipe
(see :func:`recipe_prompts`). Its 5 epochs become steps where the data is known."""

CLASS_RECIPE: dict[str, Any] = {
    "eligible": SELF_ATTENTION_REINIT,
    "sparsity": 0.999,
    "prune_num": 10,
    "saliency_guidance": 8.5,
    "reinit": "trunc_normal",
    "objective": "contrast",
    "projection": "none",
    "lr": 2e-5,
    "lam": 0.1,
    "batch_size": 8,
    "grad_clip": None,
}
"""The class-forgetting recipe (Imagenette) in flat settings; 3 epochs."""

RECIPE_EPOCHS = {"nudity": 5, "class": 3}
"""Repair epochs over the retain set of each recipe."""


def recipe_prompts(
    concept: str,
    *,
    forget_prompts: list[str] = (),
    anchor_prompt: str = "",
    class_names: list[str] = (),
    template: str = "an image of a {}",
    forget_class: int = 0,
) -> tuple[list[str], list[int], list[int]]:
    """The conditions of a recipe: ``(prompts, forget_labels, retain_labels)``.

    ``"nudity"``: ``prompts = [anchor_prompt, *forget_prompts]`` (the anchor is label 0,
    the one retain label; the forget prompts are the others). ``"class"``: one prompt per
    class, ``template.format(name)`` in class order; the forget label is
    ``forget_class``, the retain labels the others.

    Raises:
      ValueError: an unknown concept, no forget prompt, fewer than two classes, a forget
        class out of range, or repeated prompts.
    """
    if concept == "nudity":
        if not forget_prompts or not anchor_prompt:
            raise ValueError(
                "recipe.concept='nudity' needs recipe.forget_prompts (a non-empty list) and "
                "recipe.anchor_prompt."
            )
        prompts = [anchor_prompt, *forget_prompts]
        forget, retain = list(range(1, len(prompts))), [0]
    elif concept == "class":
        if len(class_names) < 2 or not 0 <= forget_class < len(class_names):
            raise ValueError(
                f"recipe.concept='class' needs at least two recipe.class_names and a "
                f"recipe.forget_class among their indices, got {len(class_names)} names and "
                f"forget_class {forget_class!r}."
            )
        prompts = [template.format(name) for name in class_names]
        forget = [forget_class]
        retain = [i for i in range(len(prompts)) if i != forget_class]
    else:
        raise ValueError(f"recipe.concept must be 'nudity' or 'class', got {concept!r}.")
    if len(set(prompts)) != len(prompts) or "" in prompts:
        raise ValueError(f"the recipe's prompts must be distinct and non-empty: {prompts!r}.")
    return prompts, forget, retain


def prompt_conditioned_model(
    unet: Any, schedule: NoiseSchedule, contexts: jax.Array, latent_shape: tuple[int, int, int]
) -> DiffusionModel:
    """SD's UNet as a :class:`~scissorhands_jax.diffusion.DiffusionModel` over a table of
    prompt embeddings.

    Label ``i`` conditions on ``contexts[i]``; the null label ``len(contexts) - 1`` (the
    model's ``num_classes``) is the last row, which must be the empty prompt's embedding,
    the unconditional branch of classifier-free guidance. No label is ever dropped in
    training (``p_uncond = 0``), as in the release's fine-tuning. The table is a few
    prompts (K x 77 x 768 floats for SD v1.4) and lives in the functions' closure.

    Args:
      unet: the :class:`~scissorhands_jax.sd.UNet`.
      schedule: the training schedule (:meth:`SchedulerConfig.schedule`).
      contexts: (K + 1, L, D) text embeddings, the empty prompt's last.
      latent_shape: (h, w, C) of the latents.
    """
    contexts = jnp.asarray(contexts)
    if contexts.ndim != 3 or contexts.shape[0] < 2:
        raise ValueError(
            f"contexts must be (K + 1, L, D) with K >= 1 prompts, got {contexts.shape}."
        )

    def eps(params, x_t, t, labels, train=False, rng=None):
        del train, rng  # the SD UNet has no dropout
        return unet.apply({"params": params}, x_t, t, contexts[labels])

    @jax.jit
    def init(key):
        x = jnp.zeros((1, *latent_shape), jnp.float32)
        params = unet.init(key, x, jnp.zeros((1,), jnp.int32), contexts[:1])["params"]
        return params, {}

    return eps_diffusion_model(
        eps, init, image_shape=latent_shape, num_classes=contexts.shape[0] - 1,
        schedule=schedule, p_uncond=0.0,
    )  # fmt: skip


TINY_UNET = UNetConfig(
    block_out_channels=(16, 32, 32),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=2,
    cross_attention_dim=32,
    norm_num_groups=8,
)
"""A toy UNet with SD v1's block pattern (and so its ``up_blocks_1``/``up_blocks_2``
self-attentions): latents a multiple of 4 on a side."""
TINY_VAE = VAEConfig(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    norm_num_groups=8,
)
"""A toy autoencoder: images twice the latents' size."""
TINY_TEXT = TextConfig(
    vocab_size=600,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    max_position_embeddings=16,
)
"""A toy CLIP text encoder over 16 tokens."""


def tiny_stable_diffusion(key: jax.Array) -> StableDiffusion:
    """A random SD-shaped pipeline at toy sizes (:data:`TINY_UNET`, :data:`TINY_VAE`,
    :data:`TINY_TEXT`) with a byte-level tokenizer (no merges): the recipes' code paths
    on a CPU in seconds. Its images are noise; it proves plumbing, not quality."""
    k_unet, k_vae, k_text = jax.random.split(key, 3)
    unet, vae, text = UNet(TINY_UNET), AutoencoderKL(TINY_VAE), CLIPTextEncoder(TINY_TEXT)
    length = TINY_TEXT.max_position_embeddings
    up = unet.init(k_unet, jnp.zeros((1, 4, 4, 4)), jnp.zeros((1,)), jnp.zeros((1, length, 32)))
    vp = vae.init(k_vae, jnp.zeros((1, 8, 8, 3)))
    tp = text.init(k_text, jnp.zeros((1, length), jnp.int32))
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    vocab |= {BOS: len(vocab), EOS: len(vocab) + 1}
    tokenizer = CLIPTokenizer(vocab, [], max_length=length)
    return StableDiffusion(unet, up["params"], vae, vp["params"], text, tp["params"], tokenizer)
