"""One small record that lets the methods train, score and re-initialise any model.

Methods never see a module: they see a :class:`Model` of pure functions over
``(params, model_state)`` pytrees. Adapters build one from a Flax Linen module or from
a Flax NNX module (through ``nnx.split``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.tree_util import Partial

from scissorhands_jax._types import Batch, ModelLossFn, ModelState, Params, PRNGKey


class Model(NamedTuple):
    """Pure functions of one model.

    Attributes:
      init: ``init(key) -> (params, model_state)``, the model's own initialisers.
      loss: ``loss(params, model_state, batch, train) -> (loss, new_model_state)``.
      logits: ``logits(params, model_state, inputs) -> logits`` in evaluation mode.
      apply: ``apply(params, model_state, inputs, train) -> (logits, new_model_state)``:
        the forward pass in either mode (training mode updates BatchNorm statistics);
        optional for hand-made records, where :func:`forward` falls back to ``logits``.
    """

    init: Callable[[PRNGKey], tuple[Params, ModelState]]
    loss: ModelLossFn
    logits: Callable[[Params, ModelState, jax.Array], jax.Array]
    apply: Callable[[Params, ModelState, jax.Array, bool], tuple[jax.Array, ModelState]] | None = (
        None
    )


def forward(
    model: Model, params: Params, model_state: ModelState, inputs: jax.Array, train: bool
) -> tuple[jax.Array, ModelState]:
    """``(logits, new_model_state)`` in training or evaluation mode; a :class:`Model`
    without ``apply`` gives evaluation-mode logits and its state unchanged."""
    if model.apply is None:
        return model.logits(params, model_state, inputs), model_state
    return model.apply(params, model_state, inputs, train)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def linen_model(
    module: nn.Module,
    example_input: jax.Array,
    *,
    train_kwarg: str | None = "train",
    input_key: str = "image",
    label_key: str = "label",
    loss_from_logits: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
) -> Model:
    """A :class:`Model` from a Flax Linen classifier.

    Collections other than ``params`` (``batch_stats``) form the model state; in training
    mode they are mutable and updated, in evaluation mode they are read only.

    Args:
      module: the Linen module; ``module.apply(variables, x, **{train_kwarg: train})``.
      example_input: an input batch used for ``init`` (shapes only).
      train_kwarg: the name of the module's train/eval flag, or None if it has none.
      input_key: the batch key of the inputs.
      label_key: the batch key of the integer labels.
      loss_from_logits: ``loss(logits, labels) -> scalar``.

    Returns:
      The model's :class:`Model`.
    """

    def flag(train: bool) -> dict[str, Any]:
        return {train_kwarg: train} if train_kwarg else {}

    @jax.jit
    def init(key: PRNGKey):
        variables = module.init(key, example_input, **flag(False))
        params = variables["params"]
        state = {k: v for k, v in variables.items() if k != "params"}
        return params, state

    def logits(params, model_state, x):
        return module.apply({"params": params, **model_state}, x, **flag(False))

    def apply(params, model_state, x, train: bool):
        variables = {"params": params, **model_state}
        if train and model_state:
            out, updates = module.apply(variables, x, mutable=list(model_state), **flag(True))
            return out, {**model_state, **updates}
        return module.apply(variables, x, **flag(train)), model_state

    def loss(params, model_state, batch: Batch, train: bool):
        out, new_state = apply(params, model_state, batch[input_key], train)
        return loss_from_logits(out, batch[label_key]), new_state

    return Model(init=init, loss=loss, logits=logits, apply=apply)


def nnx_model(
    make: Callable[[nnx.Rngs], nnx.Module],
    *,
    input_key: str = "image",
    label_key: str = "label",
    loss_from_logits: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    param_filter: Any = nnx.Param,
) -> tuple[Model, Params, ModelState]:
    """A :class:`Model` from a Flax NNX module, through ``nnx.split``.

    The parameters are the ``nnx.Param`` state, the model state everything else
    (``nnx.BatchStat``, RNG counters). The module is rebuilt with ``nnx.merge`` inside
    each pure function and switched with ``.train()`` / ``.eval()``.

    Args:
      make: ``make(rngs) -> module``, e.g. ``lambda rngs: MyNet(rngs=rngs)``.
      input_key: the batch key of the inputs.
      label_key: the batch key of the integer labels.
      loss_from_logits: ``loss(logits, labels) -> scalar``.
      param_filter: the NNX filter of trainable state.

    Returns:
      ``(model, params, model_state)`` with the module built from key 0; call
      ``model.init(key)`` for other draws.
    """
    graphdef, _, _ = nnx.split(make(nnx.Rngs(0)), param_filter, ...)

    def init(key: PRNGKey):
        _, params, state = nnx.split(make(nnx.Rngs(key)), param_filter, ...)
        return params, state

    def run(params, model_state, x, train: bool):
        module = nnx.merge(graphdef, params, model_state, copy=True)
        module.train() if train else module.eval()
        out = module(x)
        _, _, new_state = nnx.split(module, param_filter, ...)
        return out, new_state

    def logits(params, model_state, x):
        return run(params, model_state, x, False)[0]

    def apply(params, model_state, x, train: bool):
        out, new_state = run(params, model_state, x, train)
        return out, (new_state if train else model_state)

    def loss(params, model_state, batch: Batch, train: bool):
        out, new_state = apply(params, model_state, batch[input_key], train)
        return loss_from_logits(out, batch[label_key]), new_state

    params, state = init(jax.random.key(0))
    return Model(init=init, loss=loss, logits=logits, apply=apply), params, state


@functools.cache
def _loss_with_state(loss: Callable, train: bool) -> Callable:
    """``f(model_state, params, batch) -> loss``: stable per (loss, train), so programs
    compiled for it are reused across calls (wrapped in a ``Partial`` over the state)."""

    def f(model_state, params, batch):
        return loss(params, model_state, batch, train)[0]

    return f


def bind_state(
    model: Model | ModelLossFn, model_state: ModelState, *, train: bool = False
) -> Partial:
    """``loss_fn(params, batch)`` of a model (a :class:`Model` or its
    ``loss(params, model_state, batch, train)``) with its state fixed: for
    :func:`connection_sensitivity` and :func:`forget_memory` on stateful models."""
    loss = getattr(model, "loss", model)
    return Partial(_loss_with_state(loss, train), model_state)


@functools.partial(jax.jit, static_argnums=0)
def _softmax_logits(model: Model, params: Params, model_state: ModelState, x: jax.Array):
    return jax.nn.softmax(model.logits(params, model_state, x), axis=-1)


def predict_probs(
    model: Model, params: Params, model_state: ModelState, inputs: Any, batch_size: int = 1024
) -> jax.Array:
    """Softmax probabilities of ``inputs`` in evaluation mode, in batches of ``batch_size``."""
    outs: Sequence[jax.Array] = [
        _softmax_logits(model, params, model_state, inputs[i : i + batch_size])
        for i in range(0, inputs.shape[0], batch_size)
    ]
    return jnp.concatenate(outs, axis=0)
