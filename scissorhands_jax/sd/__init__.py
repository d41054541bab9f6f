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
"""

from scissorhands_jax.sd._clip import CLIPTextEncoder
from scissorhands_jax.sd._compvis import compvis_to_diffusers, load_compvis
from scissorhands_jax.sd._config import TextConfig, UNetConfig, VAEConfig, config_from_dict
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
from scissorhands_jax.sd._tokenizer import CLIPTokenizer, load_tokenizer
from scissorhands_jax.sd._unet import REINIT_SELF_ATTENTION, UNet
from scissorhands_jax.sd._vae import AutoencoderKL

__all__ = [
    "AutoencoderKL",
    "CLIPTextEncoder",
    "CLIPTokenizer",
    "REINIT_SELF_ATTENTION",
    "StableDiffusion",
    "TextConfig",
    "UNet",
    "UNetConfig",
    "VAEConfig",
    "compvis_to_diffusers",
    "config_from_dict",
    "load_compvis",
    "load_diffusers",
    "load_text_encoder",
    "load_tokenizer",
    "load_unet",
    "load_vae",
    "place_params",
    "text_params",
    "unet_params",
    "vae_params",
]
