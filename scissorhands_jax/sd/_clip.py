"""The CLIP text encoder of SD v1.x (transformers ``CLIPTextModel``) in Flax Linen.

Pre-norm transformer with causal self-attention and quick-GELU (``x * sigmoid(1.702 x)``)
MLPs, learned position embeddings and a final layer norm. SD v1 conditions on the last
hidden state, (B, 77, 768) for the 77 token ids of a padded prompt. Parameter paths follow
the transformers keys without their ``text_model.`` prefix (``encoder/layers_0/self_attn/q_proj``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from scissorhands_jax.sd._config import TextConfig
from scissorhands_jax.sd._layers import attention, layer_norm


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention: ``q_proj``/``k_proj``/``v_proj``/``out_proj``."""

    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d, length = x.shape[-1], x.shape[1]
        q, k, v = (nn.Dense(d, name=f"{n}_proj")(x) for n in "qkv")
        causal = jnp.tril(jnp.ones((length, length), bool))
        return nn.Dense(d, name="out_proj")(attention(q, k, v, self.heads, causal))


class MLP(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = nn.Dense(cfg.intermediate_size, name="fc1")(x)
        h = quick_gelu(h) if cfg.hidden_act == "quick_gelu" else jax.nn.gelu(h, approximate=False)
        return nn.Dense(cfg.hidden_size, name="fc2")(h)


class EncoderLayer(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        y = layer_norm(cfg.layer_norm_eps, "layer_norm1")(x)
        x = x + SelfAttention(cfg.num_attention_heads, name="self_attn")(y)
        return x + MLP(cfg, name="mlp")(layer_norm(cfg.layer_norm_eps, "layer_norm2")(x))


class Encoder(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            x = EncoderLayer(self.config, name=f"layers_{i}")(x)
        return x


class Embeddings(nn.Module):
    config: TextConfig

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        cfg = self.config
        tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="token_embedding")(ids)
        positions = nn.Embed(
            cfg.max_position_embeddings, cfg.hidden_size, name="position_embedding"
        )
        return tokens + positions(jnp.arange(ids.shape[1]))[None]


class CLIPTextEncoder(nn.Module):
    """Token ids (B, L), L <= max_position_embeddings -> last hidden state (B, L, hidden)."""

    config: TextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        if input_ids.ndim != 2 or input_ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"CLIPTextEncoder: input_ids has shape {input_ids.shape}; it needs (batch, "
                f"length) with length <= {cfg.max_position_embeddings} (tokenize with padding)"
            )
        x = Embeddings(cfg, name="embeddings")(input_ids)
        x = Encoder(cfg, name="encoder")(x)
        return layer_norm(cfg.layer_norm_eps, "final_layer_norm")(x)
