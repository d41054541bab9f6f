"""A compact class-conditional UNet for ε-prediction (DDPM) in Flax Linen.

The layout follows Ho et al., "Denoising Diffusion Probabilistic Models" (NeurIPS 2020)
and its class-conditional variant used by Selective Amnesia and SalUn on CIFAR-10: a
sinusoidal time embedding through a two-layer MLP, a learned class embedding added to
it (index ``num_classes`` is the *null* class of classifier-free guidance, Ho &
Salimans 2022), residual blocks with GroupNorm, self-attention at the resolutions
listed in ``attn_resolutions``, and skip connections from the down path to the up path.

Parameter paths name the blocks, so the eligible sets of Scissorhands are regexes on
them (see :data:`UNET_PRESETS`)::

    time_embed/dense_0, time_embed/dense_1, class_embed, conv_in,
    down_{l}/res_{i}, down_{l}/attn_{i}, down_{l}/downsample,
    mid/res_0, mid/attn, mid/res_1,
    up_{l}/res_{i}, up_{l}/attn_{i}, up_{l}/upsample,
    norm_out, conv_out

Inside a residual block: ``norm_0, conv_0, temb_proj, norm_1, conv_1`` and ``skip``
(a 1x1 conv when the channel count changes); inside an attention block: ``norm, qkv,
proj_out``. Level ``l`` of the up path works at the same resolution as level ``l`` of
the down path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

UNET_PRESETS: dict[str, str] = {
    "up_attn": r"(^|/)up_\d+/attn_\d+/",
    "attn": r"(^|/)(attn(_\d+)?)/",
    "up": r"(^|/)up_\d+/",
    "mid": r"(^|/)mid/",
}
"""Eligible sets over :class:`UNet` paths. ``"up_attn"`` is the self-attention of the
up-path blocks, the analogue of the release's Stable Diffusion choice (``attn1`` of UNet
output blocks 4 and 7); ``"attn"`` every self-attention; ``"up"`` the whole up path."""


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    r"""Sinusoidal embedding of (integer or real) timesteps, shape ``(B, dim)``.

    .. math::
        e_{2i} = \sin(t\, \omega_i), \quad e_{2i+1} \to \cos(t\, \omega_i),\quad
        \omega_i = \text{max\_period}^{-i / (d/2 - 1)}

    (sines in the first half, cosines in the second, as in the DDPM code).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half) / max(half - 1, 1))
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _groups(channels: int, wanted: int, min_per_group: int = 4) -> int:
    """GroupNorm groups: a divisor of ``channels``, at most ``wanted``, with at least
    ``min_per_group`` channels per group where possible. A group of one channel would
    subtract the per-channel spatial mean, erasing the time and class embedding that a
    residual block adds as a per-channel constant."""
    for groups in range(min(wanted, channels), 0, -1):
        if channels % groups == 0 and channels // groups >= min_per_group:
            return groups
    return 1


class ResBlock(nn.Module):
    """GroupNorm, swish, 3x3 conv, + projected embedding, GroupNorm, swish, dropout,
    3x3 conv, plus the (1x1-projected) input."""

    features: int
    norm_groups: int = 8
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
        h = nn.GroupNorm(_groups(x.shape[-1], self.norm_groups), name="norm_0")(x)
        h = nn.Conv(self.features, (3, 3), padding=1, name="conv_0")(nn.swish(h))
        h = h + nn.Dense(self.features, name="temb_proj")(nn.swish(emb))[:, None, None, :]
        h = nn.swish(nn.GroupNorm(_groups(self.features, self.norm_groups), name="norm_1")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(self.features, (3, 3), padding=1, name="conv_1")(h)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), name="skip")(x)
        return x + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the spatial positions, with a residual."""

    num_heads: int = 1
    norm_groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(
                f"SelfAttention: {c} channels do not split into {self.num_heads} heads."
            )
        y = nn.GroupNorm(_groups(c, self.norm_groups), name="norm")(x).reshape(b, h * w, c)
        q, k, v = jnp.split(nn.Dense(3 * c, name="qkv")(y), 3, axis=-1)
        d = c // self.num_heads
        q, k, v = (z.reshape(b, h * w, self.num_heads, d) for z in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        out = nn.Dense(c, name="proj_out")(out.reshape(b, h * w, c))
        return x + out.reshape(b, h, w, c)


class _Level(nn.Module):
    """One resolution level of the down or the up path."""

    features: int
    num_blocks: int
    attention: bool
    resample: str | None  # "down", "up" or None
    num_heads: int
    norm_groups: int
    dropout: float

    @nn.compact
    def __call__(self, h, emb, train, skips=None):
        outs = []
        for i in range(self.num_blocks):
            if skips is not None:
                h = jnp.concatenate([h, skips.pop()], axis=-1)
            h = ResBlock(self.features, self.norm_groups, self.dropout, name=f"res_{i}")(
                h, emb, train
            )
            if self.attention:
                h = SelfAttention(self.num_heads, self.norm_groups, name=f"attn_{i}")(h)
            outs.append(h)
        if self.resample == "down":
            h = nn.Conv(h.shape[-1], (3, 3), strides=2, padding=1, name="downsample")(h)
            outs.append(h)
        elif self.resample == "up":
            b, hh, ww, c = h.shape
            h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")
            h = nn.Conv(c, (3, 3), padding=1, name="upsample")(h)
        return h, outs


class UNet(nn.Module):
    """Class-conditional ε-prediction UNet.

    ``UNet(...)(x, t, y, train)`` maps noisy images ``x`` (B, H, W, C), timesteps ``t``
    (B,) and labels ``y`` (B,) in ``0..num_classes`` (``num_classes`` = the null class)
    to the predicted noise, shaped like ``x``. H and W must be divisible by
    ``2 ** (len(ch_mult) - 1)``.

    Attributes:
      num_classes: number of real classes; the embedding has one more row (null).
      ch: base channel count.
      ch_mult: channel multiplier per resolution level.
      num_res_blocks: residual blocks per level of the down path (the up path has one
        more, as in DDPM).
      attn_resolutions: spatial sizes (height) at which blocks carry self-attention;
        the middle block always has one.
      num_heads: attention heads.
      norm_groups: GroupNorm groups, reduced to a divisor of the channel count that
        leaves at least 4 channels per group (DDPM: 32 groups of >= 4 channels).
      dropout: dropout rate inside residual blocks (needs a ``"dropout"`` rng in
        training).
      out_channels: output channels (None: those of the input).
    """

    num_classes: int = 10
    ch: int = 32
    ch_mult: Sequence[int] = (1, 2)
    num_res_blocks: int = 1
    attn_resolutions: Sequence[int] = (4,)
    num_heads: int = 1
    norm_groups: int = 8
    dropout: float = 0.0
    out_channels: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, train: bool = False) -> jax.Array:
        levels = len(self.ch_mult)
        factor = 2 ** (levels - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"UNet: image size {x.shape[1:3]} is not divisible by {factor} "
                f"(2 ** (len(ch_mult) - 1) with ch_mult={tuple(self.ch_mult)}); pad or "
                "resize the images, or use fewer levels."
            )
        temb_dim = 4 * self.ch
        emb = timestep_embedding(t, self.ch)
        emb = _TimeEmbed(temb_dim, name="time_embed")(emb)
        emb = emb + nn.Embed(self.num_classes + 1, temb_dim, name="class_embed")(
            jnp.asarray(y, jnp.int32)
        )
        common = dict(num_heads=self.num_heads, norm_groups=self.norm_groups, dropout=self.dropout)
        h = nn.Conv(self.ch, (3, 3), padding=1, name="conv_in")(x)
        skips = [h]
        size = x.shape[1]
        for lvl, mult in enumerate(self.ch_mult):
            h, outs = _Level(
                self.ch * mult,
                self.num_res_blocks,
                size in self.attn_resolutions,
                "down" if lvl < levels - 1 else None,
                name=f"down_{lvl}",
                **common,
            )(h, emb, train)
            skips.extend(outs)
            size = size // 2 if lvl < levels - 1 else size
        h = _Middle(self.ch * self.ch_mult[-1], name="mid", **common)(h, emb, train)
        for lvl in reversed(range(levels)):
            h, _ = _Level(
                self.ch * self.ch_mult[lvl],
                self.num_res_blocks + 1,
                size in self.attn_resolutions,
                "up" if lvl > 0 else None,
                name=f"up_{lvl}",
                **common,
            )(h, emb, train, skips)
            size = size * 2 if lvl > 0 else size
        h = nn.swish(nn.GroupNorm(_groups(h.shape[-1], self.norm_groups), name="norm_out")(h))
        out = self.out_channels or x.shape[-1]
        return nn.Conv(out, (3, 3), padding=1, kernel_init=nn.initializers.zeros, name="conv_out")(
            h
        )


class _TimeEmbed(nn.Module):
    features: int

    @nn.compact
    def __call__(self, emb):
        emb = nn.Dense(self.features, name="dense_0")(emb)
        return nn.Dense(self.features, name="dense_1")(nn.swish(emb))


class _Middle(nn.Module):
    features: int
    num_heads: int
    norm_groups: int
    dropout: float

    @nn.compact
    def __call__(self, h, emb, train):
        h = ResBlock(self.features, self.norm_groups, self.dropout, name="res_0")(h, emb, train)
        h = SelfAttention(self.num_heads, self.norm_groups, name="attn")(h)
        return ResBlock(self.features, self.norm_groups, self.dropout, name="res_1")(h, emb, train)
