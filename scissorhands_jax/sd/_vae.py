"""The SD v1.x latent autoencoder (diffusers ``AutoencoderKL``) in Flax Linen.

Images are NHWC in [-1, 1]; the encoder returns the mean and log-variance of the
diagonal Gaussian over latents (log-variance clipped to [-30, 20], as diffusers and
CompVis do). SD's UNet works on ``scaling_factor * latents`` (0.18215 in SD v1): scale by it
after encoding and divide by it before decoding (:meth:`AutoencoderKL.encode` and
:meth:`AutoencoderKL.decode` do neither).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from scissorhands_jax.sd._config import VAEConfig
from scissorhands_jax.sd._layers import Downsample, ResnetBlock, Upsample, conv, group_norm

_EPS = 1e-6


class PixelAttention(nn.Module):
    """One-head self-attention over pixels with a residual (the mid block's ``attentions.0``)."""

    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = group_norm(self.groups, _EPS, "group_norm")(x).reshape(b, h * w, c)
        q, k, v = (nn.Dense(c, name=n)(y) for n in ("to_q", "to_k", "to_v"))
        logits = jnp.einsum("bqc,bkc->bqk", q, k) * c**-0.5
        y = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, axis=-1), v)
        return x + nn.Dense(c, name="to_out_0")(y).reshape(b, h, w, c)


class MidBlock(nn.Module):
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = ResnetBlock(c, self.groups, _EPS, name="resnets_0")(x)
        x = PixelAttention(self.groups, name="attentions_0")(x)
        return ResnetBlock(c, self.groups, _EPS, name="resnets_1")(x)


class CodecBlock(nn.Module):
    """``DownEncoderBlock2D`` (``resample="down"``) or ``UpDecoderBlock2D`` (``"up"``)."""

    channels: int
    layers: int
    groups: int
    resample: str | None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.layers):
            x = ResnetBlock(self.channels, self.groups, _EPS, name=f"resnets_{j}")(x)
        if self.resample == "down":
            x = Downsample(self.channels, padding=0, name="downsamplers_0")(x)
        elif self.resample == "up":
            x = Upsample(self.channels, name="upsamplers_0")(x)
        return x


class Encoder(nn.Module):
    config: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, groups = self.config, self.config.norm_num_groups
        x = conv(cfg.block_out_channels[0], 3, "conv_in")(x)
        last = len(cfg.block_out_channels) - 1
        for i, ch in enumerate(cfg.block_out_channels):
            resample = "down" if i < last else None
            x = CodecBlock(ch, cfg.layers_per_block, groups, resample, name=f"down_blocks_{i}")(x)
        x = MidBlock(groups, name="mid_block")(x)
        x = nn.silu(group_norm(groups, _EPS, "conv_norm_out")(x))
        return conv(2 * cfg.latent_channels, 3, "conv_out")(x)


class Decoder(nn.Module):
    config: VAEConfig

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg, groups = self.config, self.config.norm_num_groups
        x = conv(cfg.block_out_channels[-1], 3, "conv_in")(z)
        x = MidBlock(groups, name="mid_block")(x)
        last = len(cfg.block_out_channels) - 1
        for i, ch in enumerate(cfg.block_out_channels[::-1]):
            resample = "up" if i < last else None
            block = CodecBlock(
                ch, cfg.layers_per_block + 1, groups, resample, name=f"up_blocks_{i}"
            )
            x = block(x)
        x = nn.silu(group_norm(groups, _EPS, "conv_norm_out")(x))
        return conv(cfg.out_channels, 3, "conv_out")(x)


class AutoencoderKL(nn.Module):
    """SD's KL autoencoder: ``encode`` images to (mean, logvar), ``decode`` latents.

    ``__call__`` (used to initialise) decodes the mean of the encoding.
    """

    config: VAEConfig

    def setup(self):
        latent = self.config.latent_channels
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quant_conv = nn.Conv(2 * latent, (1, 1))
        self.post_quant_conv = nn.Conv(latent, (1, 1))

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, H, W, in_channels) images -> latent mean and log-variance, (B, H/f, W/f, latent)."""
        mean, logvar = jnp.split(self.quant_conv(self.encoder(images)), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, latents: jax.Array) -> jax.Array:
        """(B, h, w, latent_channels) latents (unscaled) -> (B, h*f, w*f, out_channels) images."""
        return self.decoder(self.post_quant_conv(latents))

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.decode(self.encode(images)[0])
