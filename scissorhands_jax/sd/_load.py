"""Loading SD v1.x weights from a diffusers folder into the Flax modules.

A diffusers checkpoint folder (``save_pretrained``, or a download of e.g.
``CompVis/stable-diffusion-v1-4``) holds ``unet/``, ``vae/`` and ``text_encoder/``, each with
a ``config.json`` and safetensors weights (``diffusion_pytorch_model.safetensors``,
``model.safetensors``, or shards listed in a ``*.safetensors.index.json``), and
``tokenizer/`` with ``vocab.json`` and ``merges.txt``. Weights are read with the
``safetensors`` package's NumPy API: no torch, nothing unpickled.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from scissorhands_jax.sd._clip import CLIPTextEncoder
from scissorhands_jax.sd._config import TextConfig, UNetConfig, VAEConfig, read_config
from scissorhands_jax.sd._convert import (
    convert_state_dict,
    expected_shapes,
    rename_legacy_vae_attention,
)
from scissorhands_jax.sd._tokenizer import CLIPTokenizer, load_tokenizer
from scissorhands_jax.sd._unet import UNet
from scissorhands_jax.sd._vae import AutoencoderKL

_WEIGHT_FILES = ("diffusion_pytorch_model", "model")


def safetensors_numpy():
    try:
        from safetensors.numpy import load_file
    except ImportError as err:
        raise ValueError(
            "loading SD weights needs the safetensors package: pip install 'scissorhands_jax[sd]'"
        ) from err
    return load_file


def read_safetensors(folder: str, variant: str | None = None) -> dict[str, Any]:
    """All tensors of the safetensors weights in ``folder`` (one file or an index of shards).

    Raises:
      ValueError: no weights file, or one that safetensors cannot read.
    """
    load_file = safetensors_numpy()
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    for stem in _WEIGHT_FILES:
        single, index = (
            os.path.join(folder, stem + suffix),
            os.path.join(folder, stem + suffix + ".index.json"),
        )
        if os.path.isfile(single):
            files = [single]
        elif os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            files = [os.path.join(folder, s) for s in shards]
        else:
            continue
        tensors = {}
        for path in files:
            try:
                tensors.update(load_file(path))
            except Exception as err:  # safetensors raises its own error types
                raise ValueError(f"cannot read {path!r} as safetensors: {err}") from err
        return tensors
    raise ValueError(
        f"no safetensors weights in {folder!r} (looked for {[s + suffix for s in _WEIGHT_FILES]} "
        "and their .index.json); .bin weights are pickles and are not read: convert them with "
        "diffusers' save_pretrained(safe_serialization=True)"
    )


def unet_params(config: UNetConfig, state_dict: dict, where: str = "unet", dtype=jnp.float32):
    """UNet parameters from a diffusers-named state dict (see :mod:`._convert`)."""
    size = 2 ** (len(config.block_out_channels) - 1)
    example = (
        jnp.zeros((1, size, size, config.in_channels)),
        jnp.zeros((1,)),
        jnp.zeros((1, 1, config.cross_attention_dim)),
    )
    return convert_state_dict(state_dict, expected_shapes(UNet(config), *example), where, dtype)


def vae_params(config: VAEConfig, state_dict: dict, where: str = "vae", dtype=jnp.float32):
    """Autoencoder parameters from a diffusers-named state dict (legacy attention names too)."""
    size = 2 ** (len(config.block_out_channels) - 1)
    example = jnp.zeros((1, size, size, config.in_channels))
    expected = expected_shapes(AutoencoderKL(config), example)
    return convert_state_dict(rename_legacy_vae_attention(state_dict), expected, where, dtype)


def text_params(
    config: TextConfig, state_dict: dict, where: str = "text_encoder", dtype=jnp.float32
):
    """Text encoder parameters from a transformers ``CLIPTextModel`` state dict."""
    state_dict = {
        k.removeprefix("text_model."): v
        for k, v in state_dict.items()
        if not k.endswith("position_ids")  # a buffer, not a weight
    }
    expected = expected_shapes(CLIPTextEncoder(config), jnp.zeros((1, 1), jnp.int32))
    return convert_state_dict(state_dict, expected, where, dtype)


def _load(folder, cls, convert, variant, dtype):
    folder = os.fspath(folder)
    config = read_config(os.path.join(folder, "config.json"), cls)
    return config, convert(config, read_safetensors(folder, variant), folder, dtype)


def load_unet(folder, *, variant=None, dtype=jnp.float32) -> tuple[UNet, dict]:
    """``(UNet(config), params)`` from a diffusers ``unet/`` folder.

    Raises:
      ValueError: missing files, a configuration not ported, or weights that do not fit it.
    """
    config, params = _load(folder, UNetConfig, unet_params, variant, dtype)
    return UNet(config), params


def load_vae(folder, *, variant=None, dtype=jnp.float32) -> tuple[AutoencoderKL, dict]:
    """``(AutoencoderKL(config), params)`` from a diffusers ``vae/`` folder.

    Raises:
      ValueError: as :func:`load_unet`.
    """
    config, params = _load(folder, VAEConfig, vae_params, variant, dtype)
    return AutoencoderKL(config), params


def load_text_encoder(folder, *, variant=None, dtype=jnp.float32) -> tuple[CLIPTextEncoder, dict]:
    """``(CLIPTextEncoder(config), params)`` from a transformers ``text_encoder/`` folder."""
    config, params = _load(folder, TextConfig, text_params, variant, dtype)
    return CLIPTextEncoder(config), params


class StableDiffusion(NamedTuple):
    """The networks of an SD v1.x checkpoint and their parameters (``{"params": ...}`` ready)."""

    unet: UNet
    unet_params: dict
    vae: AutoencoderKL
    vae_params: dict
    text_encoder: CLIPTextEncoder
    text_params: dict
    tokenizer: CLIPTokenizer | None


def load_diffusers(folder, *, variant=None, dtype=jnp.float32) -> StableDiffusion:
    """Every network of a diffusers SD v1.x checkpoint folder.

    Args:
      folder: holds ``unet/``, ``vae/``, ``text_encoder/`` and ``tokenizer/``.
      variant: the weights variant, e.g. ``"fp16"`` for ``*.fp16.safetensors``.
      dtype: dtype of the returned parameters.

    Raises:
      ValueError: a sub-folder or file is missing, a configuration is not ported, or
        weights do not fit their configuration (the key is named).
    """
    folder = os.fspath(folder)
    for sub in ("unet", "vae", "text_encoder", "tokenizer"):
        if not os.path.isdir(os.path.join(folder, sub)):
            raise ValueError(
                f"load_diffusers: no {sub}/ in {folder!r}; pass the folder of a diffusers "
                "Stable Diffusion checkpoint (the one holding model_index.json)"
            )
    unet, up = load_unet(os.path.join(folder, "unet"), variant=variant, dtype=dtype)
    vae, vp = load_vae(os.path.join(folder, "vae"), variant=variant, dtype=dtype)
    text, tp = load_text_encoder(os.path.join(folder, "text_encoder"), variant=variant, dtype=dtype)
    tokenizer = load_tokenizer(os.path.join(folder, "tokenizer"))
    return StableDiffusion(unet, up, vae, vp, text, tp, tokenizer)


def place_params(params: Any, sharding: jax.sharding.Sharding | Any) -> Any:
    """Puts a parameter tree on devices: one ``Sharding`` for every leaf, or a tree of them.

    E.g. ``NamedSharding(mesh, PartitionSpec())`` replicates over a mesh; FSDP-style
    per-leaf specs are a tree of shardings shaped like ``params``.
    """
    return jax.device_put(params, sharding)
