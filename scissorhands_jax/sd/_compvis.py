"""Original CompVis single-file SD v1.x checkpoints -> diffusers key names -> Flax trees.

A CompVis checkpoint (``sd-v1-4.ckpt`` or its ``.safetensors``) holds the three networks
under ``model.diffusion_model.`` (UNet), ``first_stage_model.`` (autoencoder) and
``cond_stage_model.transformer.`` (the transformers CLIP text model); other entries (EMA
copies, the noise schedule) are ignored. It carries no configuration: the SD v1.4
configurations are used unless others are given. The UNet's numbering is described in
:mod:`scissorhands_jax.sd._unet`; the autoencoder's in :func:`vae_key`.
"""

from __future__ import annotations

import os
import re

import jax.numpy as jnp

from scissorhands_jax.sd._clip import CLIPTextEncoder
from scissorhands_jax.sd._config import TextConfig, UNetConfig, VAEConfig
from scissorhands_jax.sd._load import (
    StableDiffusion,
    safetensors_numpy,
    text_params,
    unet_params,
    vae_params,
)
from scissorhands_jax.sd._unet import UNet
from scissorhands_jax.sd._vae import AutoencoderKL

UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
    "nin_shortcut": "conv_shortcut",
}
_VAE_ATTENTION = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
}


def _rename_resnet(rest: str) -> str:
    for old, new in _RESNET.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def unet_key(key: str, config: UNetConfig) -> str | None:
    """A CompVis UNet key (prefix removed) -> its diffusers name; None if it has none."""
    n = config.layers_per_block + 1
    fixed = {
        "time_embed.0.": "time_embedding.linear_1.",
        "time_embed.2.": "time_embedding.linear_2.",
    }
    fixed |= {"input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out."}
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d+)\.(.+)", key):
        k, sub, rest = int(m[1]) - 1, int(m[2]), m[3]
        level, j = divmod(k, n)
        if j == n - 1:  # the downsampler closing a level
            return f"down_blocks.{level}.downsamplers.0.{rest.replace('op.', 'conv.', 1)}"
        part = "resnets" if sub == 0 else "attentions"
        return f"down_blocks.{level}.{part}.{j}.{_rename_resnet(rest) if sub == 0 else rest}"
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", key):
        part = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}[m[1]]
        return f"mid_block.{part}.{_rename_resnet(m[2]) if part != 'attentions.0' else m[2]}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.(\d+)\.(.+)", key):
        level, j = divmod(int(m[1]), n)
        sub, rest = int(m[2]), m[3]
        attend = config.up_block_types[level] == "CrossAttnUpBlock2D"
        if sub == 0:
            return f"up_blocks.{level}.resnets.{j}.{_rename_resnet(rest)}"
        if sub == 1 and attend:
            return f"up_blocks.{level}.attentions.{j}.{rest}"
        return f"up_blocks.{level}.upsamplers.0.{rest}"
    return None


def vae_key(key: str, config: VAEConfig) -> str:
    """A CompVis autoencoder key (prefix removed) -> its diffusers name.

    ``encoder.down.{i}.block.{j}`` -> ``encoder.down_blocks.{i}.resnets.{j}``,
    ``encoder.down.{i}.downsample`` -> ``encoder.down_blocks.{i}.downsamplers.0``; the
    decoder counts its levels from the bottom, so ``decoder.up.{i}`` is
    ``decoder.up_blocks.{n-1-i}``; ``mid.block_1``/``attn_1``/``block_2`` are
    ``mid_block.resnets.0``/``attentions.0``/``resnets.1`` (attention ``norm``, ``q``, ``k``,
    ``v``, ``proj_out`` -> ``group_norm``, ``to_q``, ``to_k``, ``to_v``, ``to_out.0``);
    ``norm_out`` is ``conv_norm_out``, a resnet's ``nin_shortcut`` its ``conv_shortcut``.
    """
    last = len(config.block_out_channels) - 1
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
    key = re.sub(
        r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key
    )
    key = re.sub(
        r"^decoder\.up\.(\d+)\.(block|upsample)\.",
        lambda m: (
            f"decoder.up_blocks.{last - int(m[1])}."
            + ("resnets." if m[2] == "block" else "upsamplers.0.")
        ),
        key,
    )
    key = re.sub(r"\.mid\.block_1\.", ".mid_block.resnets.0.", key)
    key = re.sub(r"\.mid\.block_2\.", ".mid_block.resnets.1.", key)
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(\w+)\.(\w+)", key):
        return f"{m[1]}.mid_block.attentions.0.{_VAE_ATTENTION.get(m[2], m[2])}.{m[3]}"
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    return key.replace(".nin_shortcut.", ".conv_shortcut.")


def compvis_to_diffusers(
    state_dict: dict, unet_config: UNetConfig, vae_config: VAEConfig
) -> tuple[dict, dict, dict]:
    """A CompVis checkpoint's state dict -> (UNet, autoencoder, text encoder) state dicts
    with diffusers/transformers key names.

    Raises:
      ValueError: a UNet key that has no diffusers name.
    """
    unet, vae, text = {}, {}, {}
    for key, value in state_dict.items():
        if key.startswith(UNET_PREFIX):
            new = unet_key(key[len(UNET_PREFIX) :], unet_config)
            if new is None:
                raise ValueError(f"load_compvis: {key} is no SD v1 UNet weight")
            unet[new] = value
        elif key.startswith(VAE_PREFIX):
            vae[vae_key(key[len(VAE_PREFIX) :], vae_config)] = value
        elif key.startswith(TEXT_PREFIX):
            text[key[len(TEXT_PREFIX) :]] = value
    return unet, vae, text


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The state dict of a CompVis ``.safetensors`` (NumPy) or ``.ckpt`` file.

    A ``.ckpt`` is a pickle; it is read only with ``torch.load(weights_only=True)``, which
    refuses anything but tensors and plain containers, and only if torch is installed.

    Raises:
      ValueError: the file is missing or unreadable, torch is absent for a ``.ckpt``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"load_compvis: no file {path!r}")
    if path.endswith(".safetensors"):
        load_file = safetensors_numpy()
        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"load_compvis: cannot read {path!r} as safetensors: {err}") from err
    try:
        import torch
    except ImportError as err:
        raise ValueError(
            f"load_compvis: {path!r} is a pickled checkpoint; reading it needs torch (CPU "
            "build), or convert it to .safetensors where torch is installed"
        ) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip or torch errors all mean: not a weights file
        raise ValueError(f"load_compvis: cannot read {path!r} with torch: {err}") from err
    obj = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(obj, dict):
        raise ValueError(f"load_compvis: {path!r} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_compvis(
    path: str | os.PathLike,
    *,
    unet_config: UNetConfig | None = None,
    vae_config: VAEConfig | None = None,
    text_config: TextConfig | None = None,
    dtype=jnp.float32,
) -> StableDiffusion:
    """The networks of a CompVis single-file checkpoint (SD v1.4 configurations by default).

    The tokenizer is not in the file; load it with :func:`load_tokenizer` from a
    ``tokenizer/`` folder. Raises ``ValueError`` as :func:`read_checkpoint` does, and when
    a network's weights are absent or do not fit its configuration (the key is named).
    """
    unet_config, vae_config = unet_config or UNetConfig(), vae_config or VAEConfig()
    text_config = text_config or TextConfig()
    unet, vae, text = compvis_to_diffusers(read_checkpoint(path), unet_config, vae_config)
    where = os.fspath(path)
    for name, part in (("UNet", unet), ("autoencoder", vae), ("text encoder", text)):
        if not part:
            raise ValueError(f"load_compvis: {where!r} has no {name} weights")
    return StableDiffusion(
        UNet(unet_config),
        unet_params(unet_config, unet, f"{where} (UNet)", dtype),
        AutoencoderKL(vae_config),
        vae_params(vae_config, vae, f"{where} (autoencoder)", dtype),
        CLIPTextEncoder(text_config),
        text_params(text_config, text, f"{where} (text encoder)", dtype),
        None,
    )
