"""Phase 1 of Scissorhands for any model: saliency, global top-k, masked re-init.

One function serves classifiers and diffusion models alike: it sees a loss function
and fresh values, never a model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scissorhands_jax._reinit import masked_reinit, torch_default_init
from scissorhands_jax._saliency import connection_sensitivity, top_k_mask
from scissorhands_jax._settings import TrimSettings
from scissorhands_jax._types import Batch, BatchSource, LossFn, Mask, Params, PRNGKey
from scissorhands_jax.data.batching import first_batch
from scissorhands_jax.parallel import mesh_of, on_mesh, shard_batch

Fresh = Params | Callable[[PRNGKey], Params]
"""Fresh values for the re-initialisation: a tree shaped like the parameters, or a
function of a key that draws one (see :func:`fresh_values`)."""


class Trimmed(NamedTuple):
    """What :func:`trim` returns.

    Attributes:
      params: the trimmed parameters.
      mask: bool tree, True where an entry was re-initialised (within the eligible
        leaves).
      batches: the forget batches the saliency was computed on.
    """

    params: Params
    mask: Mask
    batches: list[Batch]


def trunc_normal_init(key: PRNGKey, params: Params, std: float = 0.02) -> Params:
    """Fresh values ``trunc_normal_(std=0.02)`` truncated at ±2, as timm draws them (the
    release's diffusion class recipe)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            std * jax.random.truncated_normal(k, -2.0 / std, 2.0 / std, x.shape, x.dtype)
            for k, x in zip(keys, leaves, strict=True)
        ],
    )


def fresh_values(
    reinit: str, params: Params, init: Callable[[PRNGKey], Params] | None = None
) -> Callable[[PRNGKey], Params]:
    """The draw of fresh values named by ``reinit`` (see
    :data:`~scissorhands_jax._settings.REINITS`): ``init(key)`` (the model's own
    initialisers), PyTorch's default, or the truncated normal."""
    if reinit == "model":
        if init is None:
            raise ValueError("reinit='model' needs the model's init function.")
        return init
    if reinit == "torch":
        return lambda key: torch_default_init(key, params)
    if reinit == "trunc_normal":
        return lambda key: trunc_normal_init(key, params)
    raise ValueError(f"unknown reinit {reinit!r}.")


def trim(
    loss_fn: LossFn,
    params: Params,
    forget: BatchSource,
    *,
    key: PRNGKey,
    eligible: Mask,
    fresh: Fresh,
    settings: TrimSettings = TrimSettings(),
) -> Trimmed:
    r"""Saliency on ``prune_num`` fresh forget batches, global top-k, masked re-init.

    .. math::
        s = |\theta \odot \textstyle\sum_b |\nabla L(\theta; b)||, \qquad
        \theta' = [s > \tau] \odot \theta_{\text{fresh}} + [s \le \tau] \odot \theta

    on the eligible leaves, with :math:`\tau` the
    :math:`\lfloor\text{sparsity}\cdot N\rfloor`-th smallest score over all parameters;
    with ``settings.ties="exact"`` (the default) equal scores at :math:`\tau` are ranked
    by position so that exactly :math:`N - \lfloor\text{sparsity}\cdot N\rfloor` entries
    are selected, with ``"release"`` the release's rule (see :func:`top_k_mask`).
    Selected bias entries become 0. Batch i is the first
    batch of ``forget`` drawn with ``fold_in(k_batches, i)`` and the fresh values are
    drawn with ``k_fresh``, where ``k_batches, k_fresh = split(key)``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` (a model's state enters through its
        closure, e.g. :func:`~scissorhands_jax.bind_state`).
      params: the trained parameters (not modified); placed on a mesh
        (:func:`~scissorhands_jax.parallel.on_mesh`), the saliency runs data-parallel
        and the fresh values join them there.
      forget: :data:`BatchSource` of the forget set.
      key: PRNG key.
      eligible: bool-per-leaf tree of the leaves that may be re-initialised.
      fresh: fresh values, or ``fresh(key)`` drawing them.
      settings: ``sparsity``, ``prune_num`` and ``ties`` are read here.

    Returns:
      A :class:`Trimmed`.
    """
    mesh = mesh_of(params)
    k_batches, k_fresh = jax.random.split(key)
    batches = [
        first_batch(forget, jax.random.fold_in(k_batches, i)) for i in range(settings.prune_num)
    ]
    if mesh is not None:  # placed once: the caller may run more passes on them
        batches = [shard_batch(b, mesh) for b in batches]
    scores = connection_sensitivity(loss_fn, params, batches)
    selected = top_k_mask(scores, settings.sparsity, ties=settings.ties)
    if callable(fresh):  # drawn inside the program, so only the eligible leaves are drawn
        apply = jax.jit(functools.partial(draw_and_trim, eligible, fresh))
        trimmed, mask = apply(params, selected, k_fresh)
    else:
        values = fresh if mesh is None else on_mesh(fresh, mesh)
        apply = jax.jit(functools.partial(_apply_trim, eligible))  # which leaves: static
        trimmed, mask = apply(params, selected, values)
    return Trimmed(trimmed, mask, batches)


def draw_and_trim(
    eligible: Mask, fresh: Callable[[PRNGKey], Params], params: Params, selected: Mask, key
) -> tuple[Params, Mask]:
    """The re-initialisation with fresh values drawn by ``fresh(key)`` in the same program.

    Under ``jax.jit`` the draws of leaves that are not eligible feed nothing, so the
    compiler removes them: re-initialising the ten self-attention leaves of a Stable
    Diffusion UNet draws about 8 M values, not a second copy of its 860 M parameters.
    The values drawn are those of ``fresh(key)``, leaf for leaf.

    Returns:
      ``(trimmed params, mask of re-initialised entries)``.
    """
    return _apply_trim(eligible, params, selected, fresh(key))


def _apply_trim(eligible, params, selected, fresh):
    trimmed = masked_reinit(params, selected, fresh, eligible=eligible)
    mask = jax.tree.map(lambda m, e: m if e else jnp.zeros_like(m), selected, eligible)
    return trimmed, mask
