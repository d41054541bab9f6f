"""The SD v1.x text-conditional UNet (diffusers ``UNet2DConditionModel``) in Flax Linen.

Parameter paths follow the diffusers key names with list indices joined by ``_``: the
self-attention of the second transformer of the second up block is
``up_blocks_1/attentions_1/transformer_blocks_0/attn1``. The CompVis checkpoints
(``model.diffusion_model.*``) number the same layers differently; for SD v1 (4 levels,
2 layers per block, so 3 per up level):

- ``input_blocks.0`` is ``conv_in``; ``input_blocks.{3i+j+1}.0``/``.1`` are
  ``down_blocks.i.resnets.j``/``attentions.j``; ``input_blocks.{3i+3}.0.op`` is
  ``down_blocks.i.downsamplers.0.conv``;
- ``middle_block.0``/``.1``/``.2`` are ``mid_block.resnets.0``/``attentions.0``/``resnets.1``;
- ``output_blocks.{3i+j}.0``/``.1`` are ``up_blocks.i.resnets.j``/``attentions.j``, and the
  last layer of an up level carries its upsampler (``.1.conv`` without attention, ``.2.conv``
  with it) as ``up_blocks.i.upsamplers.0.conv``.

So the up-block self-attentions that CompVis calls ``output_blocks.4`` and
``output_blocks.7`` (``4 = 3*1 + 1``, ``7 = 3*2 + 1``) are ``up_blocks.1.attentions.1`` and
``up_blocks.2.attentions.1`` in diffusers, here
``up_blocks_1/attentions_1/transformer_blocks_0/attn1`` and
``up_blocks_2/attentions_1/transformer_blocks_0/attn1`` (:data:`REINIT_SELF_ATTENTION`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from scissorhands_jax.sd._config import UNetConfig
from scissorhands_jax.sd._layers import (
    Attention,
    Downsample,
    ResnetBlock,
    Upsample,
    conv,
    group_norm,
    layer_norm,
)

REINIT_SELF_ATTENTION = (
    "up_blocks_1/attentions_1/transformer_blocks_0/attn1",
    "up_blocks_2/attentions_1/transformer_blocks_0/attn1",
)


def timestep_embedding(
    timesteps: jax.Array, dim: int, flip_sin_to_cos: bool, freq_shift: float
) -> jax.Array:
    """Sinusoidal embedding of (B,) timesteps: frequencies ``10000^(-i / (dim/2 - shift))``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    angles = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class FeedForward(nn.Module):
    """GEGLU feed-forward: ``net.0.proj`` to 2 x 4 x dim, ``h * gelu(gate)``, ``net.2``."""

    dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, gate = jnp.split(GEGLUProj(8 * self.dim, name="net_0")(x), 2, axis=-1)
        return nn.Dense(self.dim, name="net_2")(h * jax.nn.gelu(gate, approximate=False))


class GEGLUProj(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.features, name="proj")(x)


class TransformerBlock(nn.Module):
    """diffusers ``BasicTransformerBlock``: self-attention, cross-attention, GEGLU."""

    dim: int
    heads: int
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        x = x + Attention(self.dim, self.heads, name="attn1")(layer_norm(self.eps, "norm1")(x))
        x = x + Attention(self.dim, self.heads, name="attn2")(
            layer_norm(self.eps, "norm2")(x), context
        )
        return x + FeedForward(self.dim, name="ff")(layer_norm(self.eps, "norm3")(x))


class SpatialTransformer(nn.Module):
    """diffusers ``Transformer2DModel`` over the pixels of an NHWC feature map."""

    config: UNetConfig

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        cfg = self.config
        b, h, w, c = x.shape
        y = group_norm(cfg.norm_num_groups, 1e-6, "norm")(x)
        if cfg.use_linear_projection:
            y = nn.Dense(c, name="proj_in")(y.reshape(b, h * w, c))
        else:
            y = conv(c, 1, "proj_in")(y).reshape(b, h * w, c)
        y = TransformerBlock(c, cfg.heads, cfg.norm_eps, name="transformer_blocks_0")(y, context)
        if cfg.use_linear_projection:
            y = nn.Dense(c, name="proj_out")(y).reshape(b, h, w, c)
        else:
            y = conv(c, 1, "proj_out")(y.reshape(b, h, w, c))
        return x + y


class MidBlock(nn.Module):
    config: UNetConfig

    @nn.compact
    def __call__(self, x, temb, context):
        cfg = self.config
        c, scale = x.shape[-1], cfg.mid_block_scale_factor
        res = lambda i: ResnetBlock(  # noqa: E731
            c, cfg.norm_num_groups, cfg.norm_eps, scale, name=f"resnets_{i}"
        )
        x = res(0)(x, temb)
        x = SpatialTransformer(cfg, name="attentions_0")(x, context)
        return res(1)(x, temb)


class DownBlock(nn.Module):
    """``CrossAttnDownBlock2D`` (``attend``) or ``DownBlock2D``; returns output and skips."""

    config: UNetConfig
    channels: int
    attend: bool
    downsample: bool

    @nn.compact
    def __call__(self, h, temb, context):
        cfg, skips = self.config, []
        for j in range(cfg.layers_per_block):
            h = ResnetBlock(self.channels, cfg.norm_num_groups, cfg.norm_eps, name=f"resnets_{j}")(
                h, temb
            )
            if self.attend:
                h = SpatialTransformer(cfg, name=f"attentions_{j}")(h, context)
            skips.append(h)
        if self.downsample:
            h = Downsample(self.channels, cfg.downsample_padding, name="downsamplers_0")(h)
            skips.append(h)
        return h, skips


class UpBlock(nn.Module):
    """``CrossAttnUpBlock2D`` (``attend``) or ``UpBlock2D``: eats one skip per layer."""

    config: UNetConfig
    channels: int
    attend: bool
    upsample: bool

    @nn.compact
    def __call__(self, h, skips, temb, context):
        cfg = self.config
        for j in range(cfg.layers_per_block + 1):
            h = jnp.concatenate([h, skips.pop()], axis=-1)
            h = ResnetBlock(self.channels, cfg.norm_num_groups, cfg.norm_eps, name=f"resnets_{j}")(
                h, temb
            )
            if self.attend:
                h = SpatialTransformer(cfg, name=f"attentions_{j}")(h, context)
        if self.upsample:
            h = Upsample(self.channels, name="upsamplers_0")(h)
        return h


class TimeEmbedding(nn.Module):
    features: int

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        t = nn.silu(nn.Dense(self.features, name="linear_1")(t))
        return nn.Dense(self.features, name="linear_2")(t)


class UNet(nn.Module):
    """Predicts the noise in SD latents.

    Call with ``sample`` (B, H, W, in_channels) latents (NHWC; H and W divisible by
    ``2 ** (len(block_out_channels) - 1)``), ``timesteps`` (B,) or a scalar, and
    ``context`` (B, L, cross_attention_dim) text embeddings; returns (B, H, W, out_channels).
    """

    config: UNetConfig

    @nn.compact
    def __call__(self, sample: jax.Array, timesteps: jax.Array, context: jax.Array) -> jax.Array:
        cfg = self.config
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        if sample.shape[1] % factor or sample.shape[2] % factor:
            raise ValueError(
                f"UNet: sample height and width {sample.shape[1:3]} must be multiples of "
                f"{factor} (one halving per down block but the last)"
            )
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (sample.shape[0],))
        t = timestep_embedding(
            timesteps, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift
        )
        temb = TimeEmbedding(cfg.time_embed_dim, name="time_embedding")(t)

        h = conv(cfg.block_out_channels[0], 3, "conv_in")(sample)
        skips = [h]
        last = len(cfg.block_out_channels) - 1
        for i, (ch, kind) in enumerate(
            zip(cfg.block_out_channels, cfg.down_block_types, strict=True)
        ):
            attend = kind == "CrossAttnDownBlock2D"
            block = DownBlock(cfg, ch, attend, i < last, name=f"down_blocks_{i}")
            h, new = block(h, temb, context)
            skips += new

        h = MidBlock(cfg, name="mid_block")(h, temb, context)

        for i, (ch, kind) in enumerate(
            zip(cfg.block_out_channels[::-1], cfg.up_block_types, strict=True)
        ):
            attend = kind == "CrossAttnUpBlock2D"
            h = UpBlock(cfg, ch, attend, i < last, name=f"up_blocks_{i}")(h, skips, temb, context)

        h = nn.silu(group_norm(cfg.norm_num_groups, cfg.norm_eps, "conv_norm_out")(h))
        return conv(cfg.out_channels, 3, "conv_out")(h)
