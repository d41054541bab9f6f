"""Stable Diffusion v1.x architecture settings, read from a checkpoint's ``config.json``.

Each class takes the fields of the matching diffusers/transformers ``config.json`` that
change the network (unknown fields are ignored) and refuses the ones this port does not
implement, so a checkpoint that would silently compute something else is rejected. The
defaults are SD v1.4's (``CompVis/stable-diffusion-v1-4``), used for single-file CompVis
checkpoints, which carry no configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

_CROSS_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_CROSS_UP, _PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"


def _pick(cls, config: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in config.items():
        if key in names and value is not None:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The text-conditional UNet (diffusers ``UNet2DConditionModel``) of SD v1.x.

    ``attention_head_dim`` follows diffusers' reading of the SD v1 configs: when
    ``num_attention_heads`` is not given, ``attention_head_dim`` is the number of heads
    (8 in SD v1), and each head has ``channels // heads`` dimensions.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (_CROSS_DOWN, _CROSS_DOWN, _CROSS_DOWN, _PLAIN_DOWN)
    up_block_types: tuple[str, ...] = (_PLAIN_UP, _CROSS_UP, _CROSS_UP, _CROSS_UP)
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    layers_per_block: int = 2
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    use_linear_projection: bool = False
    transformer_layers_per_block: int = 1
    act_fn: str = "silu"
    center_input_sample: bool = False
    time_embedding_type: str = "positional"
    class_embed_type: str | None = None
    addition_embed_type: str | None = None
    resnet_time_scale_shift: str = "default"
    only_cross_attention: bool = False
    upcast_attention: bool = False
    dual_cross_attention: bool = False
    attention_type: str = "default"
    # options of later models that change the computation without adding weights (or
    # with weights the key check would only report as unexpected): refused by value
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    timestep_post_act: str | None = None
    time_embedding_act_fn: str | None = None
    time_cond_proj_dim: int | None = None
    encoder_hid_dim: int | None = None
    num_class_embeds: int | None = None
    cross_attention_norm: str | None = None
    resnet_skip_time_act: bool = False
    mid_block_only_cross_attention: bool | None = None

    def __post_init__(self):
        n = len(self.block_out_channels)
        _require(
            len(self.down_block_types) == n and len(self.up_block_types) == n,
            "down_block_types and up_block_types need one entry per block_out_channels",
        )
        _require(
            set(self.down_block_types) <= {_CROSS_DOWN, _PLAIN_DOWN}
            and set(self.up_block_types) <= {_CROSS_UP, _PLAIN_UP},
            f"only {_CROSS_DOWN}/{_PLAIN_DOWN} and {_CROSS_UP}/{_PLAIN_UP} blocks are "
            f"ported, not {self.down_block_types} / {self.up_block_types}",
        )
        _require(
            self.mid_block_type == "UNetMidBlock2DCrossAttn",
            f"mid_block_type {self.mid_block_type!r} is not ported",
        )
        unported = {
            "act_fn": (self.act_fn, "silu"),
            "time_embedding_type": (self.time_embedding_type, "positional"),
            "class_embed_type": (self.class_embed_type, None),
            "addition_embed_type": (self.addition_embed_type, None),
            "resnet_time_scale_shift": (self.resnet_time_scale_shift, "default"),
            "only_cross_attention": (self.only_cross_attention, False),
            "dual_cross_attention": (self.dual_cross_attention, False),
            "attention_type": (self.attention_type, "default"),
            "transformer_layers_per_block": (self.transformer_layers_per_block, 1),
            "conv_in_kernel": (self.conv_in_kernel, 3),
            "conv_out_kernel": (self.conv_out_kernel, 3),
            "timestep_post_act": (self.timestep_post_act, None),
            "time_embedding_act_fn": (self.time_embedding_act_fn, None),
            "time_cond_proj_dim": (self.time_cond_proj_dim, None),
            "encoder_hid_dim": (self.encoder_hid_dim, None),
            "num_class_embeds": (self.num_class_embeds, None),
            "cross_attention_norm": (self.cross_attention_norm, None),
            "resnet_skip_time_act": (self.resnet_skip_time_act, False),
        }
        for name, (value, supported) in unported.items():
            _require(value == supported, f"{name}={value!r} is not ported (only {supported!r})")
        _require(
            not self.mid_block_only_cross_attention,
            "mid_block_only_cross_attention=True is not ported",
        )
        for name in ("attention_head_dim", "num_attention_heads"):
            _require(not isinstance(getattr(self, name), tuple), f"per-block {name} is not ported")

    @property
    def heads(self) -> int:
        """Attention heads in every transformer block."""
        return self.num_attention_heads or self.attention_head_dim

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The latent autoencoder (diffusers ``AutoencoderKL``) of SD v1.x."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 4
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    act_fn: str = "silu"
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    force_upcast: bool = True

    def __post_init__(self):
        n = len(self.block_out_channels)
        _require(
            self.down_block_types == ("DownEncoderBlock2D",) * n
            and self.up_block_types == ("UpDecoderBlock2D",) * n,
            "only DownEncoderBlock2D/UpDecoderBlock2D blocks, one per block_out_channels, "
            "are ported",
        )
        _require(self.act_fn == "silu", f"act_fn={self.act_fn!r} is not ported (only 'silu')")
        _require(
            self.use_quant_conv and self.use_post_quant_conv and self.mid_block_add_attention,
            "only the SD v1 autoencoder (quant convs, mid-block attention) is ported",
        )


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The CLIP text encoder (transformers ``CLIPTextModel``) of SD v1.x: CLIP ViT-L/14's."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _require(
            self.hidden_act in ("quick_gelu", "gelu"),
            f"hidden_act={self.hidden_act!r} is not ported (quick_gelu or gelu)",
        )
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            "hidden_size must be a multiple of num_attention_heads",
        )


def read_config(path: str | os.PathLike, cls):
    """``cls`` built from the ``config.json`` at ``path``.

    Raises:
      ValueError: the file is missing, not JSON, or describes a network not ported.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no {path!r}: a diffusers checkpoint folder has one per model")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path!r} as JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path!r} holds no JSON object")
    return _pick(cls, config, path)


def config_from_dict(config: dict[str, Any], cls, where: str = "config"):
    """``cls`` built from the fields of a ``config.json``-like dict (others ignored)."""
    return _pick(cls, config, where)
