"""PyTorch state dicts (diffusers/transformers key names) -> the Flax parameter trees.

A key maps to a parameter path mechanically: a numeric part joins the name before it
(``down_blocks.0.resnets.1.conv1.weight`` -> ``down_blocks_0/resnets_1/conv1``) and the
leaf is renamed for Flax (``weight`` -> ``kernel``, ``scale`` or ``embedding``, whichever the
module has). Layouts change on the way: convolution kernels (out, in, kh, kw) -> (kh, kw,
in, out), linear weights (out, in) -> (in, out); a (out, in, 1, 1) kernel loaded into a
linear layer (CompVis' autoencoder attention) is squeezed first. Every key must land on a
parameter of the right shape and every parameter must be filled, or a ``ValueError`` names
the offending keys.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

# diffusers wrote the autoencoder attention under these names before 0.14
_LEGACY_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def expected_shapes(module: nn.Module, *example_inputs) -> dict[tuple[str, ...], tuple]:
    """Parameter path -> shape of ``module`` on inputs shaped like ``example_inputs``."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs))
    return {path: leaf.shape for path, leaf in flatten_dict(shapes["params"]).items()}


def key_to_module_path(key: str) -> tuple[tuple[str, ...], str]:
    """``a.b.0.c.weight`` -> (("a", "b_0", "c"), "weight")."""
    parts = key.split(".")
    path: list[str] = []
    for part in parts[:-1]:
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path), parts[-1]


def rename_legacy_vae_attention(state_dict: dict) -> dict:
    """diffusers < 0.14 autoencoder attention names -> the current ``to_q``... names."""
    out = {}
    for key, value in state_dict.items():
        head, _, leaf = key.rpartition(".")
        mod_head, _, mod = head.rpartition(".")
        if ".attentions." in key and mod in _LEGACY_VAE_ATTENTION:
            key = f"{mod_head}.{_LEGACY_VAE_ATTENTION[mod]}.{leaf}"
        out[key] = value
    return out


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


def _flax_layout(value: np.ndarray, leaf: str, shape: tuple) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4 and len(shape) == 2 and value.shape[2:] == (1, 1):
        value = value[:, :, 0, 0]
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def convert_state_dict(
    state_dict: dict, expected: dict[tuple[str, ...], tuple], where: str, dtype=jnp.float32
) -> dict:
    """A diffusers/transformers-named state dict -> the nested Flax ``params`` dict.

    Args:
      state_dict: key -> NumPy array or torch tensor, in PyTorch layout.
      expected: parameter path -> shape (:func:`expected_shapes`).
      where: what is being loaded, for error messages (a file name).
      dtype: dtype of the returned arrays.

    Raises:
      ValueError: a key that is no parameter, a parameter no key fills, or a shape that
        does not fit; the message names them.
    """
    by_module: dict[tuple[str, ...], set[str]] = {}
    for path in expected:
        by_module.setdefault(path[:-1], set()).add(path[-1])
    params, unexpected = {}, []
    for key, value in state_dict.items():
        module, leaf = key_to_module_path(key)
        leaves = by_module.get(module, set())
        if leaf == "weight":
            leaf = next((n for n in ("kernel", "scale", "embedding") if n in leaves), "kernel")
        path = (*module, leaf)
        if path not in expected:
            unexpected.append(key)
            continue
        array = _flax_layout(_to_numpy(value), leaf, expected[path])
        if array.shape != expected[path]:
            raise ValueError(
                f"{where}: {key} has shape {tuple(np.shape(value))}, which does not fit "
                f"{'/'.join(path)} {expected[path]}; does the config.json belong to these "
                "weights?"
            )
        params[path] = jnp.asarray(array, dtype)
    missing = sorted("/".join(p) for p in set(expected) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{where}: the weights do not fit the configured network: {len(missing)} "
            f"parameters missing (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {sorted(unexpected)[:3]}); check that config.json and the weights come "
            "from the same checkpoint."
        )
    return unflatten_dict(params)
