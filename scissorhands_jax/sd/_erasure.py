r"""Two baselines for forgetting a concept in a text-conditional diffusion model: ESD and SalUn.

Both are pure functions of an ε-model ``eps(params, x_t, t, context) -> ε`` (the SD UNet
through :func:`unet_eps`, or any other text-conditional noise predictor), and both train
with Adam on a mask of trainable entries, one step compiled once per run
(:func:`make_esd_step`, :func:`make_salun_step`; the state is an :class:`ErasureState`).

- **ESD** (Gandikota, Materzyńska, Fiotto-Kaufman & Bau, "Erasing Concepts from Diffusion
  Models", ICCV 2023): the model's prediction for the concept is pulled towards the frozen
  original's prediction guided *away* from it (negative guidance, :func:`esd_loss`). ESD-x
  trains the cross-attention (``attn2``) only, ESD-u everything else but the time
  embedding and the output layers (:func:`esd_mask`).
- **SalUn** (Fan, Liu, Zhang, Wong, Wei & Liu, "SalUn: Empowering Machine Unlearning via
  Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024),
  its Stable Diffusion recipe: a weight-saliency mask (:func:`salun_mask`), then forget
  images paired with another prompt plus α times the retain loss (:func:`salun_loss`),
  the gradients masked.

Squared norms are means over the elements (PyTorch's ``MSELoss``), as in
:mod:`scissorhands_jax.sd` 's other losses.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from scissorhands_jax._reinit import leaf_paths
from scissorhands_jax._saliency import top_k_mask
from scissorhands_jax._settings import check_choice, check_int, check_real
from scissorhands_jax._types import Batch, Mask, Params, PRNGKey
from scissorhands_jax.baselines import Hyperparameters
from scissorhands_jax.diffusion.schedule import NoiseSchedule, q_sample
from scissorhands_jax.sd._losses import draw_noise

EpsFn = Callable[[Params, jax.Array, jax.Array, jax.Array], jax.Array]
"""``eps(params, x_t, t, context) -> ε``: a text-conditional noise predictor."""

ESD_VARIANTS = ("x", "u")
"""ESD's variants, named by what they train: ``"x"`` the cross-attention, ``"u"`` the
rest (see :func:`esd_mask`)."""
ESD_X_T = ("ddim", "noised")
"""Where ESD's x_t comes from: ``"ddim"`` the trained model's own DDIM from noise,
stopped part-way (the paper's, :func:`~scissorhands_jax.sd.esd_x_t`); ``"noised"`` forget
latents noised at a uniform t."""
ESD_DDIM_STEPS = 50
"""DDIM steps of ESD's sampling grid (its training code's ``ddim_steps``)."""
ESD_START_GUIDANCE = 3.0
"""Classifier-free guidance of ESD's sampling (its ``start_guidance``)."""
ESD_U_EXCLUDED = ("attn2", "time_embedding", "conv_norm_out", "conv_out")
"""What ESD-u leaves frozen, by path: the cross-attention, the time embedding and the output
layers (CompVis ``time_embed`` and ``out.*``)."""


def unet_eps(unet: Any) -> EpsFn:
    """The ε-model of a Flax module called as ``unet.apply({"params": p}, x_t, t, context)``
    (:class:`~scissorhands_jax.sd.UNet`)."""
    return functools.partial(_apply_unet, unet)


def _apply_unet(unet, params, x_t, t, context):
    return unet.apply({"params": params}, x_t, t, context)


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def esd_target(
    eps: EpsFn,
    original: Params,
    x_t: jax.Array,
    t: jax.Array,
    context: jax.Array,
    uncond: jax.Array,
    negative_guidance: float = 1.0,
) -> jax.Array:
    r"""ESD's regression target, from the frozen original :math:`\epsilon^*`:

    .. math:: \epsilon^*(x_t, \varnothing, t) - \eta\,\big(\epsilon^*(x_t, c, t) -
        \epsilon^*(x_t, \varnothing, t)\big)

    with c = ``context`` (the concept's prompt embedding), :math:`\varnothing` =
    ``uncond`` (the empty prompt's), η = ``negative_guidance``. Both predictions come from
    one call on the doubled batch; the result carries no gradient.
    """
    both = eps(
        original,
        jnp.concatenate([x_t, x_t]),
        jnp.concatenate([t, t]),
        jnp.concatenate([uncond, context]),
    )
    e_uncond, e_cond = jnp.split(both, 2)
    return jax.lax.stop_gradient(e_uncond - negative_guidance * (e_cond - e_uncond))


def esd_loss(
    eps: EpsFn,
    params: Params,
    original: Params,
    x_t: jax.Array,
    t: jax.Array,
    context: jax.Array,
    uncond: jax.Array,
    negative_guidance: float = 1.0,
) -> jax.Array:
    r"""The ESD loss (Gandikota et al., ICCV 2023, Eq. 4):

    .. math:: \big\lVert \epsilon_\theta(x_t, c, t) - \big[\epsilon^*(x_t, \varnothing, t)
        - \eta\,(\epsilon^*(x_t, c, t) - \epsilon^*(x_t, \varnothing, t))\big]
        \big\rVert^2

    Args:
      eps: the ε-model.
      params: θ, the parameters being trained.
      original: the frozen original parameters of :math:`\epsilon^*`.
      x_t: (B, ...) noisy latents at ``t``.
      t: (B,) int timesteps.
      context: c, (B, L, D) the concept's prompt embeddings.
      uncond: :math:`\varnothing`, (B, L, D) the empty prompt's embeddings.
      negative_guidance: η (the paper's 1.0).

    Returns:
      The scalar loss.

    Example:
      >>> import jax.numpy as jnp
      >>> eps = lambda p, x, t, c: p * x + c.mean(axis=(1, 2))[:, None]
      >>> x, t = jnp.ones((1, 2)), jnp.zeros(1, int)
      >>> c, null = jnp.ones((1, 1, 1)), jnp.zeros((1, 1, 1))
      >>> float(esd_loss(eps, 1.0, 1.0, x, t, c, null))  # target 1 - (2 - 1) = 0
      4.0
    """
    target = esd_target(eps, original, x_t, t, context, uncond, negative_guidance)
    return _mse(eps(params, x_t, t, context), target)


def esd_mask(params: Params, variant: str = "x") -> Mask:
    """ESD's trainable parameters as a per-leaf boolean tree (``jnp.bool_`` scalars).

    ``"x"`` (ESD-x, the release's ``xattn``): the leaves whose path has ``attn2``, the
    cross-attention. ``"u"`` (ESD-u, ``noxattn``): every other leaf but the time
    embedding and the output layers (:data:`ESD_U_EXCLUDED`; the release leaves out
    ``time_embed`` and ``out.*`` as well).

    Raises:
      ValueError: an unknown ``variant``, or a tree where the subset is empty.
    """
    check_choice("variant", variant, ESD_VARIANTS)
    paths = leaf_paths(params)
    if variant == "x":
        flags = ["attn2" in p.split("/") for p in paths]
    else:
        flags = [not _esd_u_excluded(p) for p in paths]
    if not any(flags):
        raise ValueError(
            f"ESD-{variant} selects no parameter of this tree (ESD-x trains the leaves under "
            "an 'attn2' module, the cross-attention); pass the UNet's params."
        )
    return jax.tree.unflatten(jax.tree.structure(params), [jnp.bool_(f) for f in flags])


def _esd_u_excluded(path: str) -> bool:
    parts = path.split("/")
    return "attn2" in parts or parts[0] in ESD_U_EXCLUDED


def eps_loss(
    eps: EpsFn,
    params: Params,
    schedule: NoiseSchedule,
    latents: jax.Array,
    context: jax.Array,
    t: jax.Array,
    noise: jax.Array,
) -> jax.Array:
    r"""The latent-diffusion loss :math:`\lVert \epsilon - \epsilon_\theta(x_t, t, c)
    \rVert^2`, :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`,
    for any ε-model (:func:`~scissorhands_jax.sd.ldm_loss` is the same for the UNet)."""
    return _mse(noise, eps(params, q_sample(schedule, latents, t, noise), t, context))


def salun_loss(
    eps: EpsFn,
    params: Params,
    schedule: NoiseSchedule,
    forget: tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array],
    retain: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    alpha: float = 0.5,
) -> jax.Array:
    r"""SalUn's loss for text-to-image models (Fan et al., ICLR 2024, Eq. 8; the
    release's output matching):

    .. math:: \big\lVert \epsilon_\theta(x_t, t, c_f) - \mathrm{sg}\,
        \epsilon_\theta(x_t, t, c') \big\rVert^2 + \alpha\,L_{LDM}(D_r)

    with :math:`x_t` noised from a forget image's latents, :math:`c_f` its prompt and
    :math:`c' \ne c_f` another prompt (a random other class, :func:`other_class`, or an
    anchor such as "a photo of a person wearing clothes"), sg the stop-gradient.

    Args:
      eps: the ε-model.
      params: θ.
      schedule: the training noise schedule.
      forget: ``(latents, context, pseudo_context, t, noise)`` of the forget images.
      retain: ``(latents, context, t, noise)`` of the retain images (:func:`eps_loss`).
      alpha: α, the retain weight (the release's 0.5).
    """
    forget_loss, retain_loss = salun_terms(eps, params, schedule, forget, retain)
    return forget_loss + alpha * retain_loss


def salun_terms(
    eps: EpsFn,
    params: Params,
    schedule: NoiseSchedule,
    forget: tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array],
    retain: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
) -> tuple[jax.Array, jax.Array]:
    """The two terms of :func:`salun_loss`: ``(forget term, retain LDM loss)``."""
    latents, context, pseudo, t, noise = forget
    x_t = q_sample(schedule, latents, t, noise)
    target = jax.lax.stop_gradient(eps(params, x_t, t, pseudo))
    return _mse(eps(params, x_t, t, context), target), eps_loss(eps, params, schedule, *retain)


def other_class(key: PRNGKey, labels: jax.Array, num_classes: int) -> jax.Array:
    """For each label c, a class drawn uniformly from the ``num_classes - 1`` others
    (SalUn's random pseudo prompt :math:`c'`)."""
    check_int("num_classes", num_classes, 2, "SalUn's pseudo prompt needs another class")
    shift = jax.random.randint(key, jnp.shape(labels), 1, num_classes)
    return (jnp.asarray(labels) + shift) % num_classes


@functools.partial(jax.jit, static_argnums=0)
def _forget_grad(eps, params, schedule, batch, key):
    t, noise = draw_noise(key, batch["latents"], schedule.num_timesteps)
    return jax.grad(eps_loss, argnums=1)(
        eps, params, schedule, batch["latents"], batch["context"], t, noise
    )


def salun_mask(
    eps: EpsFn,
    params: Params,
    schedule: NoiseSchedule,
    forget: Iterable[Batch],
    key: PRNGKey,
    ratio: float = 0.5,
) -> Mask:
    r"""SalUn's weight-saliency mask for a text-to-image model:

    .. math:: m = \mathbb 1\big[\, |g| \text{ among the top } \rho \,\big], \qquad
        g = \sum_{b} \nabla_\theta L_{LDM}(\theta; b)

    the gradients of the forget batches' LDM loss (:func:`eps_loss` with their own
    prompts; t and noise drawn from ``fold_in(key, i)`` for batch i) summed, then their
    magnitude ranked over every entry of every leaf together; the top ρ = ``ratio`` are
    trainable (exactly :math:`N - \lfloor (1-\rho) N \rfloor` of N entries, ties broken
    by position).

    Args:
      eps: the ε-model.
      params: the original parameters.
      schedule: the training noise schedule.
      forget: batches ``{"latents": (B, ...), "context": (B, L, D)}`` of the forget set.
      key: PRNG key.
      ratio: ρ, the trainable fraction, in (0, 1) (the release's 0.5).

    Returns:
      A boolean tree shaped like ``params``, True where an entry is trained.

    Raises:
      ValueError: ``ratio`` outside (0, 1), or no forget batch.
    """
    ratio = check_real("ratio", ratio, positive=True, below=1.0, hint="the trainable fraction")
    total = None
    for i, batch in enumerate(forget):
        g = _forget_grad(eps, params, schedule, check_batch(batch, "forget"),
                         jax.random.fold_in(key, i))  # fmt: skip
        total = g if total is None else jax.tree.map(jnp.add, total, g)
    if total is None:
        raise ValueError("salun_mask: the forget batches are empty; pass at least one batch.")
    return top_k_mask(jax.tree.map(jnp.abs, total), 1.0 - ratio, ties="exact")


def check_batch(batch: Any, name: str, keys: tuple[str, ...] = ("latents", "context")) -> dict:
    if not isinstance(batch, dict) or any(k not in batch for k in keys):
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"a {name} batch must be a dict with entries {list(keys)}; got {got}.")
    return batch


@dataclasses.dataclass(frozen=True)
class ESDHyperparameters(Hyperparameters):
    """ESD's settings: the paper's defaults (Adam lr 1e-5, 1000 iterations of batch 1,
    negative guidance η = 1, ESD-x, x_t from the model's DDIM: 50 steps, guidance 3).

    Attributes:
      lr: Adam's learning rate.
      iterations: optimiser steps.
      batch_size: examples per step.
      negative_guidance: η of :func:`esd_target`.
      variant: ``"x"`` (ESD-x, cross-attention) or ``"u"`` (ESD-u, the rest), see
        :func:`esd_mask`.
      x_t: ``"ddim"`` (the paper's: x_t from the trained model's DDIM, see
        :func:`~scissorhands_jax.sd.esd_x_t`) or ``"noised"`` (forget latents noised at a
        uniform t), see :data:`ESD_X_T`.
      ddim_steps: with ``"ddim"``, the DDIM grid's steps n.
      start_guidance: with ``"ddim"``, the sampling's classifier-free guidance.
    """

    lr: float = 1e-5
    iterations: int = 1000
    batch_size: int = 1
    negative_guidance: float = 1.0
    variant: str = "x"
    x_t: str = "ddim"
    ddim_steps: int = ESD_DDIM_STEPS
    start_guidance: float = ESD_START_GUIDANCE

    def check(self) -> None:
        check_real("lr", self.lr, positive=True, hint="Adam's learning rate")
        check_int("iterations", self.iterations, 0)
        check_int("batch_size", self.batch_size, 1)
        check_real("negative_guidance", self.negative_guidance, low=0.0,
                   hint="η >= 0 guides away from the concept (the paper's 1.0)")  # fmt: skip
        check_choice("variant", self.variant, ESD_VARIANTS)
        check_choice("x_t", self.x_t, ESD_X_T)
        check_int("ddim_steps", self.ddim_steps, 1)
        check_real("start_guidance", self.start_guidance, low=0.0,
                   hint="the guidance of ESD's sampling (the paper's 3)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SalunSDHyperparameters(Hyperparameters):
    """SalUn's Stable Diffusion settings (the release: Adam lr 1e-5, 5 epochs, batch 8,
    α = 0.5, mask ratio 0.5).

    Attributes:
      lr: Adam's learning rate.
      epochs: passes over the forget set.
      batch_size: forget (and retain) examples per step.
      alpha: α, the retain weight of :func:`salun_loss`.
      ratio: the trainable fraction of :func:`salun_mask`, in (0, 1).
    """

    lr: float = 1e-5
    epochs: int = 5
    batch_size: int = 8
    alpha: float = 0.5
    ratio: float = 0.5

    def check(self) -> None:
        check_real("lr", self.lr, positive=True, hint="Adam's learning rate")
        check_int("epochs", self.epochs, 0)
        check_int("batch_size", self.batch_size, 1)
        check_real("alpha", self.alpha, low=0.0, hint="the retain weight")
        check_real("ratio", self.ratio, positive=True, below=1.0, hint="the trainable fraction")
