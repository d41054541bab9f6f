"""Building blocks shared by the SD UNet and autoencoder (NHWC, float32 by default).

Submodule names are the diffusers attribute names with list indices joined by ``_``
(``resnets.1`` -> ``resnets_1``, ``to_out.0`` -> ``to_out_0``), so a diffusers key maps to
a parameter path mechanically (:mod:`scissorhands_jax.sd._convert`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def group_norm(groups: int, eps: float, name: str) -> nn.GroupNorm:
    # the two-pass variance: E[x^2] - E[x]^2 loses digits the reference keeps
    return nn.GroupNorm(num_groups=groups, epsilon=eps, use_fast_variance=False, name=name)


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


def conv(features: int, kernel: int, name: str, stride: int = 1, padding: int | None = None):
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(
        features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)), name=name
    )


def attention(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, mask=None) -> jax.Array:
    """Scaled dot-product attention of (B, Lq, D) on (B, Lk, D) with ``heads`` heads.

    ``mask`` (broadcast to (B, heads, Lq, Lk)) is True where attending is allowed.
    """
    b, lq, d = q.shape
    split = lambda x: x.reshape(b, x.shape[1], heads, d // heads)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (d // heads) ** -0.5
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, lq, d)


class Attention(nn.Module):
    """diffusers ``Attention``: ``to_q``/``to_k``/``to_v``, heads, ``to_out.0``."""

    dim: int
    heads: int
    qkv_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        context = x if context is None else context
        q = nn.Dense(self.dim, use_bias=self.qkv_bias, name="to_q")(x)
        k = nn.Dense(self.dim, use_bias=self.qkv_bias, name="to_k")(context)
        v = nn.Dense(self.dim, use_bias=self.qkv_bias, name="to_v")(context)
        return nn.Dense(x.shape[-1], name="to_out_0")(attention(q, k, v, self.heads))


class ResnetBlock(nn.Module):
    """diffusers ``ResnetBlock2D`` ("default" time-embedding norm, SiLU, no dropout).

    ``time_emb`` is None in the autoencoder, which then has no ``time_emb_proj``.
    """

    out_channels: int
    groups: int
    eps: float
    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array | None = None) -> jax.Array:
        h = nn.silu(group_norm(self.groups, self.eps, "norm1")(x))
        h = conv(self.out_channels, 3, "conv1")(h)
        if time_emb is not None:
            t = nn.Dense(self.out_channels, name="time_emb_proj")(nn.silu(time_emb))
            h = h + t[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, "norm2")(h))
        h = conv(self.out_channels, 3, "conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, "conv_shortcut")(x)
        return (x + h) / self.output_scale_factor


class Downsample(nn.Module):
    """diffusers ``Downsample2D`` with a convolution (stride 2).

    ``padding=0`` is the autoencoder's: pad one zero row/column at the bottom/right first.
    """

    channels: int
    padding: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv(self.channels, 3, "conv", stride=2, padding=self.padding)(x)


class Upsample(nn.Module):
    """diffusers ``Upsample2D``: nearest-neighbour 2x, then a 3x3 convolution."""

    channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv(self.channels, 3, "conv")(x)
