"""Stable Diffusion v1.x in Flax: the UNet, the autoencoder, the CLIP text encoder and its
tokenizer, loaded from diffusers folders or CompVis single-file checkpoints.

Nothing else in the package imports this one; it needs ``safetensors`` and ``regex``
(``pip install 'scissorhands_jax[sd]'``). Arrays are NHWC. Example, with a diffusers
copy of ``CompVis/stable-diffusion-v1-4``::

    from scissorhands_jax import sd

    m = sd.load_diffusers("stable-diffusion-v1-4")
    ids = m.tokenizer(["a photo of a cat"])                      # (1, 77)
    context = m.text_encoder.apply({"params": m.text_params}, ids)  # (1, 77, 768)
    eps = m.unet.apply({"params": m.unet_params}, latents, t, context)
    images = sd.text_to_image(m, ["a photo of a cat"], jax.random.key(0)[None])  # uint8

Sampling is DDIM or PLMS with classifier-free guidance (:func:`text_to_image`,
:func:`generate_eval_set` for a prompt file); the release's losses are pure functions
(:func:`ldm_loss`, :func:`anchor_loss`, :func:`class_saliency_loss`, ...), and so are the
baselines ESD and SalUn (:func:`esd_loss`, :func:`salun_mask`, :func:`make_esd_step`,
:func:`make_salun_step`; ESD's x_t from the model's own partial DDIM, :func:`esd_x_t`
and :func:`partial_ddim`; as methods of a recipe :func:`esd_unlearn`,
:func:`salun_unlearn`); the release's two recipes are settings (:data:`NUDITY_RECIPE`,
:data:`CLASS_RECIPE`) of the one diffusion method, which sees the UNet through
:func:`prompt_conditioned_model`. A folder of
generated images is judged by :func:`nudenet_counts` (the ``sd-eval`` extra),
:func:`classifier_accuracy` and :func:`folder_fid`.
"""

from scissorhands_jax.diffusion.model import classifier_free_guidance
from scissorhands_jax.sd._clip import CLIPTextEncoder
from scissorhands_jax.sd._compvis import compvis_to_diffusers, load_compvis
from scissorhands_jax.sd._config import TextConfig, UNetConfig, VAEConfig, config_from_dict
from scissorhands_jax.sd._erasure import (
    ESD_VARIANTS,
    ESD_X_T,
    EpsFn,
    ESDHyperparameters,
    SalunSDHyperparameters,
    eps_loss,
    esd_loss,
    esd_mask,
    esd_target,
    other_class,
    salun_loss,
    salun_mask,
    unet_eps,
)
from scissorhands_jax.sd._erasure_ddim import (
    esd_ddim_count,
    esd_ddim_plan,
    esd_timestep_bounds,
    esd_x_t,
    partial_ddim,
)
from scissorhands_jax.sd._erasure_run import esd_unlearn, salun_unlearn
from scissorhands_jax.sd._erasure_step import (
    ErasureState,
    init_erasure_state,
    make_esd_step,
    make_salun_step,
)
from scissorhands_jax.sd._evalset import Prompt, generate_eval_set, read_prompts
from scissorhands_jax.sd._evaluate import (
    CLASS_PROMPT,
    EXPOSED_CLASSES,
    IMAGENETTE_CLASSES,
    NUDENET_LABELS,
    NUDENET_THRESHOLD,
    class_prompts,
    classifier_accuracy,
    folder_fid,
    image_files,
    nudenet_counts,
    read_images,
)
from scissorhands_jax.sd._load import (
    StableDiffusion,
    load_diffusers,
    load_text_encoder,
    load_unet,
    load_vae,
    place_params,
    text_params,
    unet_params,
    vae_params,
)
from scissorhands_jax.sd._losses import (
    ANCHOR_PROMPT,
    REPAIR_WEIGHT,
    SALIENCY_GUIDANCE,
    anchor_loss,
    class_repair_loss,
    class_saliency_loss,
    draw_noise,
    encode_latents,
    ldm_loss,
    nudity_repair_loss,
)
from scissorhands_jax.sd._recipes import (
    CLASS_RECIPE,
    NUDITY_RECIPE,
    RECIPE_EPOCHS,
    SELF_ATTENTION_REINIT,
    prompt_conditioned_model,
    recipe_prompts,
    tiny_stable_diffusion,
)
from scissorhands_jax.sd._sampling import GUIDANCE_SCALE, encode_prompts, text_to_image
from scissorhands_jax.sd._scheduler import (
    SAMPLERS,
    SamplingSteps,
    SchedulerConfig,
    ddim_step,
    ddim_steps,
    plms_steps,
    read_scheduler_config,
)
from scissorhands_jax.sd._tokenizer import CLIPTokenizer, load_tokenizer
from scissorhands_jax.sd._unet import REINIT_SELF_ATTENTION, UNet
from scissorhands_jax.sd._vae import AutoencoderKL
from scissorhands_jax.sd._words import WordTokenizer

__all__ = [
    "ANCHOR_PROMPT",
    "AutoencoderKL",
    "CLASS_PROMPT",
    "CLASS_RECIPE",
    "CLIPTextEncoder",
    "CLIPTokenizer",
    "ESDHyperparameters",
    "ESD_VARIANTS",
    "ESD_X_T",
    "EXPOSED_CLASSES",
    "EpsFn",
    "ErasureState",
    "GUIDANCE_SCALE",
    "IMAGENETTE_CLASSES",
    "NUDENET_LABELS",
    "NUDENET_THRESHOLD",
    "NUDITY_RECIPE",
    "Prompt",
    "RECIPE_EPOCHS",
    "REINIT_SELF_ATTENTION",
    "REPAIR_WEIGHT",
    "SALIENCY_GUIDANCE",
    "SAMPLERS",
    "SELF_ATTENTION_REINIT",
    "SalunSDHyperparameters",
    "SamplingSteps",
    "SchedulerConfig",
    "StableDiffusion",
    "TextConfig",
    "UNet",
    "UNetConfig",
    "VAEConfig",
    "WordTokenizer",
    "anchor_loss",
    "class_prompts",
    "class_repair_loss",
    "class_saliency_loss",
    "classifier_accuracy",
    "classifier_free_guidance",
    "compvis_to_diffusers",
    "config_from_dict",
    "ddim_step",
    "ddim_steps",
    "draw_noise",
    "encode_latents",
    "encode_prompts",
    "eps_loss",
    "esd_ddim_count",
    "esd_ddim_plan",
    "esd_loss",
    "esd_mask",
    "esd_target",
    "esd_timestep_bounds",
    "esd_unlearn",
    "esd_x_t",
    "folder_fid",
    "generate_eval_set",
    "image_files",
    "init_erasure_state",
    "ldm_loss",
    "load_compvis",
    "load_diffusers",
    "load_text_encoder",
    "load_tokenizer",
    "load_unet",
    "load_vae",
    "make_esd_step",
    "make_salun_step",
    "nudenet_counts",
    "nudity_repair_loss",
    "other_class",
    "partial_ddim",
    "place_params",
    "plms_steps",
    "prompt_conditioned_model",
    "read_images",
    "read_prompts",
    "read_scheduler_config",
    "recipe_prompts",
    "salun_loss",
    "salun_mask",
    "salun_unlearn",
    "text_params",
    "text_to_image",
    "tiny_stable_diffusion",
    "unet_eps",
    "unet_params",
    "vae_params",
]
