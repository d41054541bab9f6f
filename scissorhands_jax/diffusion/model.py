"""The ε-prediction loss and the anchor loss of a class-conditional DDPM, as a
:class:`Model` record.

The core methods see a model as ``loss(params, model_state, batch, train)``; for a
diffusion model the batch carries what the loss needs besides images and labels:

- ``"noise_key"`` (B, 2) uint32: one threefry key per example, from which the loss
  draws the timestep, the noise and the classifier-free-guidance label dropout. A
  :class:`NoisedSource` adds fresh keys to every batch, as a pure function of the
  epoch key, so saliency, memory and repair batches are all reproducible.
- ``"anchor"`` (B,) int, read by :func:`anchor_loss` only: the anchor condition of each
  example (a :class:`NoisedSource` with ``anchor`` draws it).

Which loss is computed is the caller's choice of function, never the batch's:
:func:`epsilon_loss` (optionally on the guided prediction) or :func:`anchor_loss`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import Batch, BatchSource, Params, PRNGKey
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.diffusion.schedule import NoiseSchedule, q_sample

EpsFn = Callable[..., jax.Array]
"""``eps_fn(params, x_t, t, labels, train=False, rng=None) -> predicted noise``."""

KEY_IMPL = "threefry2x32"


def guided_eps(
    eps_fn: EpsFn,
    params: Params,
    x_t: jax.Array,
    t: jax.Array,
    labels: jax.Array,
    scale: jax.Array | float | None,
    null_class: int,
    *,
    train: bool = False,
    rng: PRNGKey | None = None,
) -> jax.Array:
    r"""The classifier-free-guided noise prediction (Ho & Salimans 2022):

    .. math::
        \tilde\epsilon = \epsilon(x_t, \varnothing) + s\,(\epsilon(x_t, c) -
        \epsilon(x_t, \varnothing))

    with :math:`s` = ``scale`` (a scalar or one per example). ``s = 1`` is the
    conditional prediction; Ho & Salimans' weight w is ``s = 1 + w`` (the release's
    ``(1 + 7.5) ε_c − 7.5 ε_u`` is s = 8.5); SalUn's ``cond_scale`` is s. With
    ``scale=None`` only the conditional branch is evaluated.
    """
    if scale is None:
        return eps_fn(params, x_t, t, labels, train, rng)
    n = x_t.shape[0]
    both = eps_fn(
        params,
        jnp.concatenate([x_t, x_t]),
        jnp.concatenate([t, t]),
        jnp.concatenate([labels, jnp.full_like(labels, null_class)]),
        train,
        rng,
    )
    cond, uncond = both[:n], both[n:]
    s = jnp.asarray(scale, cond.dtype).reshape((-1,) + (1,) * (cond.ndim - 1))
    return classifier_free_guidance(uncond, cond, s)


def classifier_free_guidance(
    eps_uncond: jax.Array, eps_cond: jax.Array, scale: float | jax.Array
) -> jax.Array:
    r"""The guided noise prediction :math:`\epsilon_\varnothing + s\,(\epsilon_c -
    \epsilon_\varnothing)` (Ho & Salimans 2022), s = ``scale`` (broadcast against the
    predictions).

    SD's sampling uses s = 7.5; the release's class saliency folds its guidance 7.5 in as
    :math:`8.5\,\epsilon_c - 7.5\,\epsilon_\varnothing`, i.e. s = 8.5.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


def _noised(schedule: NoiseSchedule, batch: Batch, null_class: int, p_uncond: float):
    """``(x_t, t, labels, noise, rngs)`` drawn from the per-example ``"noise_key"``."""
    x0 = batch["image"]
    keys = jax.random.wrap_key_data(batch["noise_key"], impl=KEY_IMPL)
    num_t = schedule.betas.shape[0]

    def draw(k):
        k_t, k_n, k_d, k_r = jax.random.split(k, 4)
        t = jax.random.randint(k_t, (), 0, num_t)
        noise = jax.random.normal(k_n, x0.shape[1:], x0.dtype)
        return t, noise, jax.random.bernoulli(k_d, p_uncond), k_r

    t, noise, drop, rngs = jax.vmap(draw)(keys)
    labels = jnp.asarray(batch["label"], jnp.int32)
    if p_uncond > 0:
        labels = jnp.where(drop, null_class, labels)
    return q_sample(schedule, x0, t, noise), t, labels, noise, rngs


def epsilon_loss(
    eps_fn: EpsFn,
    params: Params,
    schedule: NoiseSchedule,
    batch: Batch,
    *,
    null_class: int,
    p_uncond: float = 0.0,
    train: bool = False,
    guidance: float | None = None,
) -> jax.Array:
    r"""The simple DDPM loss (Ho et al. 2020, Eq. 14).

    For each example a key from ``batch["noise_key"]`` draws :math:`t \sim U\{0..T-1\}`,
    :math:`\epsilon \sim N(0, I)` and, with probability ``p_uncond``, replaces the
    label by ``null_class``. With :math:`x_t` = :func:`q_sample`:

    .. math::
        L = \operatorname{mean} \|\epsilon - \hat\epsilon_\theta(x_t, t, c)\|^2

    where :math:`\hat\epsilon` is the guided prediction of scale ``guidance`` (see
    :func:`guided_eps`; the release's class saliency uses s = 8.5), or the conditional
    one for ``guidance=None``. The mean runs over all entries, as PyTorch's ``MSELoss``
    in the release.

    Args:
      eps_fn: the network, see :data:`EpsFn`.
      params: its parameters.
      schedule: the :class:`NoiseSchedule`.
      batch: ``{"image", "label", "noise_key"}``; images in [-1, 1].
      null_class: the label of the unconditional branch.
      p_uncond: label-dropout probability (classifier-free-guidance training).
      train: run the network in training mode (dropout).
      guidance: the guidance scale s, or None.
    """
    x_t, t, labels, noise, rngs = _noised(schedule, batch, null_class, p_uncond)
    rng = rngs[0] if train else None
    pred = guided_eps(eps_fn, params, x_t, t, labels, guidance, null_class, train=train, rng=rng)
    return jnp.mean((pred - noise) ** 2)


def anchor_loss(
    eps_fn: EpsFn,
    params: Params,
    schedule: NoiseSchedule,
    batch: Batch,
    *,
    null_class: int,
    p_uncond: float = 0.0,
    train: bool = False,
) -> jax.Array:
    r"""The anchor loss of the release's concept recipe and of SalUn's random labelling:

    .. math::
        L = \operatorname{mean} \|\epsilon_\theta(x_t, t, c) -
        \mathrm{sg}[\epsilon_\theta(x_t, t, c_a)]\|^2

    on the same noisy image :math:`x_t` (drawn as in :func:`epsilon_loss`), with the
    anchor condition :math:`c_a` = ``batch["anchor"]``.

    Args:
      eps_fn, params, schedule, null_class, p_uncond, train: as for :func:`epsilon_loss`.
      batch: ``{"image", "label", "noise_key", "anchor"}``.

    Raises:
      KeyError: a batch without ``"anchor"`` (draw it with ``NoisedSource(anchor=...)``).
    """
    if "anchor" not in batch:
        raise KeyError(
            "anchor_loss needs an 'anchor' entry in the batch: build the forget source "
            "with NoisedSource(..., anchor=class index, 'next' or 'random')."
        )
    x_t, t, labels, _, rngs = _noised(schedule, batch, null_class, p_uncond)
    rng = rngs[0] if train else None
    pred = eps_fn(params, x_t, t, labels, train, rng)
    target = eps_fn(params, x_t, t, jnp.asarray(batch["anchor"], jnp.int32), train, rng)
    return jnp.mean((pred - jax.lax.stop_gradient(target)) ** 2)


class DiffusionModel(NamedTuple):
    """A class-conditional DDPM as the methods see it.

    The first three fields are those of :class:`~scissorhands_jax.Model`, so the core
    functions (``fit``, ``bind_state``, ``connection_sensitivity`` through it) take it.

    Attributes:
      init: ``init(key) -> (params, {})``.
      loss: ``loss(params, model_state, batch, train) -> (loss, model_state)``:
        :func:`epsilon_loss`, with label dropout ``p_uncond`` in training mode only.
      logits: ``logits(params, model_state, inputs) -> ε`` for ``inputs =
        {"x_t", "t", "label"}`` (the network's output, evaluation mode).
      eps: the network, see :data:`EpsFn`.
      schedule: the :class:`NoiseSchedule`.
      num_classes: real classes; the null class is ``num_classes``.
      image_shape: (H, W, C).
      p_uncond: label-dropout probability in training.
      anchor_loss: ``anchor_loss(params, model_state, batch, train) -> (loss,
        model_state)``: :func:`anchor_loss` (the forget term of the anchor recipes).
      guided_loss: ``guided_loss(scale)``: the ε-loss on the guided prediction of scale
        ``scale`` (the saliency of the class recipes), as a loss of the signature of
        ``loss``; the same scale gives the same function, so its compiled programs are
        reused; ``guided_loss(None)`` is ``loss``.
    """

    init: Callable[[PRNGKey], tuple[Params, dict]]
    loss: Callable[..., tuple[jax.Array, dict]]
    logits: Callable[..., jax.Array]
    eps: EpsFn
    schedule: NoiseSchedule
    num_classes: int
    image_shape: tuple[int, int, int]
    p_uncond: float
    anchor_loss: Callable[..., tuple[jax.Array, dict]]
    guided_loss: Callable[[float | None], Callable[..., tuple[jax.Array, dict]]]

    @property
    def null_class(self) -> int:
        return self.num_classes


def diffusion_model(
    module: nn.Module,
    *,
    image_shape: tuple[int, int, int],
    num_classes: int,
    schedule: NoiseSchedule,
    p_uncond: float = 0.1,
) -> DiffusionModel:
    """Wraps an ε-prediction Linen module ``module(x, t, y, train)`` (e.g.
    :class:`~scissorhands_jax.models.unet.UNet`) as a :class:`DiffusionModel`.

    Raises:
      ValueError: for ``p_uncond`` outside [0, 1) or a malformed ``image_shape``.
    """
    image_shape = _check_shape(image_shape)

    def eps(params, x_t, t, labels, train=False, rng=None):
        rngs = {"dropout": rng} if train and rng is not None else None
        return module.apply({"params": params}, x_t, t, labels, train, rngs=rngs)

    @jax.jit
    def init(key):
        x = jnp.zeros((1, *image_shape), jnp.float32)
        zeros = jnp.zeros((1,), jnp.int32)
        return module.init(key, x, zeros, zeros, False)["params"], {}

    return eps_diffusion_model(
        eps, init, image_shape=image_shape, num_classes=num_classes, schedule=schedule,
        p_uncond=p_uncond,
    )  # fmt: skip


def _check_shape(image_shape) -> tuple[int, int, int]:
    if len(tuple(image_shape)) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {image_shape!r}.")
    return tuple(int(s) for s in image_shape)


def eps_diffusion_model(
    eps: EpsFn,
    init: Callable[[PRNGKey], tuple[Params, dict]],
    *,
    image_shape: tuple[int, int, int],
    num_classes: int,
    schedule: NoiseSchedule,
    p_uncond: float = 0.0,
) -> DiffusionModel:
    """A :class:`DiffusionModel` from its network as functions: ``eps`` (see
    :data:`EpsFn`) and ``init(key) -> (params, {})``; the losses are those of
    :func:`diffusion_model`. Any conditioning that a label can index (a class, a row of a
    table of prompt embeddings) fits.

    Raises:
      ValueError: for ``p_uncond`` outside [0, 1) or a malformed ``image_shape``.
    """
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond!r}.")
    image_shape = _check_shape(image_shape)
    null_class = int(num_classes)

    def loss(params, model_state, batch, train):
        value = epsilon_loss(eps, params, schedule, batch, null_class=null_class,
                             p_uncond=p_uncond if train else 0.0, train=train)  # fmt: skip
        return value, model_state

    def anchor(params, model_state, batch, train):
        value = anchor_loss(eps, params, schedule, batch, null_class=null_class,
                            p_uncond=p_uncond if train else 0.0, train=train)  # fmt: skip
        return value, model_state

    @functools.lru_cache(maxsize=16)
    def guided_loss(scale):
        if scale is None:
            return loss

        def guided(params, model_state, batch, train):
            value = epsilon_loss(eps, params, schedule, batch, null_class=null_class,
                                 p_uncond=p_uncond if train else 0.0, train=train,
                                 guidance=scale)  # fmt: skip
            return value, model_state

        return guided

    def logits(params, model_state, inputs):
        del model_state
        return eps(params, inputs["x_t"], inputs["t"], inputs["label"])

    return DiffusionModel(
        init,
        loss,
        logits,
        eps,
        schedule,
        int(num_classes),
        image_shape,
        float(p_uncond),
        anchor,
        guided_loss,
    )


def _host_rng(key: PRNGKey) -> np.random.Generator:
    data = np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel()
    return np.random.default_rng(data.tolist())


@dataclass(frozen=True)
class NoisedSource:
    """A :data:`BatchSource` that adds per-example ``"noise_key"`` entries (and, when
    given, per-example ``"anchor"`` labels for :func:`anchor_loss`) to the batches of
    ``source``.

    Calling it with an epoch key splits the key into the key of ``source`` and a host
    generator that draws the noise keys, so everything is a pure function of the key.

    Attributes:
      source: the underlying :data:`BatchSource` of ``{"image", "label"}`` batches.
      anchor: None; an int (a fixed anchor class, the release's concept recipe);
        ``"next"`` (``(c + 1) % num_classes``, SalUn's DDPM code); or ``"random"``
        (a uniformly drawn other class per example, SalUn's paper).
      num_classes: needed for ``"next"`` and ``"random"``.
    """

    source: BatchSource
    anchor: int | str | None = None
    num_classes: int | None = None

    def __post_init__(self):
        if isinstance(self.anchor, str) and self.anchor not in ("next", "random"):
            raise ValueError(
                f"anchor must be an int, 'next', 'random' or None; got {self.anchor!r}."
            )
        if isinstance(self.anchor, str) and not self.num_classes:
            raise ValueError(f"anchor={self.anchor!r} needs num_classes.")

    @property
    def num_batches(self) -> int | None:
        return getattr(self.source, "num_batches", None)

    def _anchor(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        labels = np.asarray(labels, np.int32)
        if isinstance(self.anchor, str):
            shift = 1 if self.anchor == "next" else rng.integers(1, self.num_classes, labels.shape)
            return ((labels + shift) % self.num_classes).astype(np.int32)
        return np.full(labels.shape, int(self.anchor), np.int32)

    def __call__(self, key: PRNGKey) -> Iterator[Batch]:
        k_data, k_noise = jax.random.split(key)
        rng = _host_rng(k_noise)
        for batch in self.source(k_data):
            n = int(np.shape(batch["label"])[0])
            out = dict(batch)
            out["noise_key"] = rng.integers(0, 2**32, (n, 2), dtype=np.uint32)
            if self.anchor is not None:
                out["anchor"] = self._anchor(batch["label"], rng)
            yield out


def diffusion_source(
    arrays: Any,
    batch_size: int,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
    anchor: int | str | None = None,
    num_classes: int | None = None,
) -> NoisedSource:
    """A :class:`NoisedSource` over in-memory ``{"image", "label"}`` arrays.

    ``drop_last`` defaults to True: every batch has the same shape, so the training step
    compiles once (a set smaller than ``batch_size`` gives one batch of all of it).
    """
    n = int(np.shape(jax.tree.leaves(arrays)[0])[0])
    return NoisedSource(
        array_source(arrays, max(min(batch_size, n), 1), shuffle=shuffle, drop_last=drop_last),
        anchor,
        num_classes,
    )
