"""One small record that lets the methods train, score and re-initialise any model.

Methods never see a module: they see a :class:`Model` of pure functions over
``(params, model_state)`` pytrees. Adapters build one from a Flax Linen module or from
a Flax NNX module (through ``nnx.split``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.tree_util import Partial

from scissorhands_jax._types import Batch, ModelLossFn, ModelState, Params, PRNGKey


class BatchSpec(NamedTuple):
    """Where a classifier's loss reads a batch, so that data can be checked before use.

    Attributes:
      input_key: the batch entry of the inputs.
      label_key: the batch entry of the labels.
      class_labels: the labels are integer class indices in ``[0, num_classes)`` (the
        default cross-entropy); False for a custom loss, whose labels are not checked.
    """

    input_key: str
    label_key: str
    class_labels: bool


class Model(NamedTuple):
    """Pure functions of one model.

    Attributes:
      init: ``init(key) -> (params, model_state)``, the model's own initialisers.
      loss: ``loss(params, model_state, batch, train) -> (loss, new_model_state)``.
      logits: ``logits(params, model_state, inputs) -> logits`` in evaluation mode.
      apply: ``apply(params, model_state, inputs, train) -> (logits, new_model_state)``:
        the forward pass in either mode (training mode updates BatchNorm statistics);
        optional for hand-made records, where :func:`forward` falls back to ``logits``.
      batch_spec: where ``loss`` reads a batch (:class:`BatchSpec`; set by the
        adapters), for :func:`check_data`; None: only finiteness is checked.
    """

    init: Callable[[PRNGKey], tuple[Params, ModelState]]
    loss: ModelLossFn
    logits: Callable[[Params, ModelState, jax.Array], jax.Array]
    apply: Callable[[Params, ModelState, jax.Array, bool], tuple[jax.Array, ModelState]] | None = (
        None
    )
    batch_spec: BatchSpec | None = None


def check_params(params: Params) -> None:
    """Raises ValueError unless every leaf of ``params`` is a float (or complex) array:
    the methods differentiate the parameters and re-initialise them."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise ValueError(
                f"params: leaf {jax.tree_util.keystr(path)} has dtype {dtype}; the method "
                "differentiates every parameter, so every leaf must be a float array (keep "
                "integer state out of the parameters, or cast it with .astype(jnp.float32))."
            )


def check_data(model: Model, params: Params, model_state: ModelState, data: dict[str, Any]) -> None:
    """Checks data where it enters, before any work: the entries the model reads, the
    labels' dtype and range (``[0, num_classes)``, ``num_classes`` the width of the
    model's output) and NaN or inf in any float entry.

    Args:
      model: the :class:`Model` (its ``batch_spec`` says which entries it reads).
      params: parameters (shapes only: they give the number of classes).
      model_state: model state, likewise.
      data: ``{name: data}``, each a pytree of arrays with a leading example axis or a
        :data:`BatchSource` (whose first batch is checked).

    Raises:
      ValueError: naming the data, the entry and what to do.
    """
    spec, num_classes = model.batch_spec, None
    for name, value in data.items():
        what = f"the {name} data"
        if callable(value):
            what = f"the first {name} batch"
            value = next(iter(value(jax.random.key(0))), None)
            if value is None:
                raise ValueError(f"the {name} source yields no batch; is the {name} set empty?")
        if spec is not None:
            keys = list(value) if isinstance(value, Mapping) else None
            for key in (spec.input_key, spec.label_key):
                if keys is None or key not in keys:
                    raise ValueError(
                        f"{what} has no {key!r} entry (its entries: {keys}); the model reads "
                        f"batch[{spec.input_key!r}] and batch[{spec.label_key!r}]: rename the "
                        "entries or pass input_key= / label_key= to linen_model or nnx_model."
                    )
        _check_finite(what, value)
        if spec is not None and spec.class_labels:
            if num_classes is None:
                num_classes = _num_classes(model, params, model_state, value[spec.input_key])
            _check_labels(what, spec.label_key, np.asarray(value[spec.label_key]), num_classes)


def _check_finite(what: str, data: Any) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        x = np.asarray(leaf)
        if not np.issubdtype(x.dtype, np.inexact):
            continue
        ok = np.isfinite(x).reshape(x.shape[0], -1).all(axis=1) if x.ndim else np.isfinite(x)
        if not np.all(ok):
            rows = np.flatnonzero(~ok)[:5].tolist() if x.ndim else []
            raise ValueError(
                f"{what} holds NaN or inf in {jax.tree_util.keystr(path)} (examples {rows}"
                f"{' ...' if x.ndim and np.sum(~ok) > 5 else ''}): the data, not the "
                "optimiser, would make the losses non-finite; fix or drop those examples."
            )


def _num_classes(model: Model, params: Params, model_state: ModelState, inputs: Any) -> int:
    x = jax.ShapeDtypeStruct((1, *np.shape(inputs)[1:]), jnp.result_type(inputs))
    try:
        out = jax.eval_shape(model.logits, params, model_state, x)
    except Exception as err:  # the model's own error, with the shapes it was given
        raise ValueError(
            f"the model cannot take inputs of shape {tuple(np.shape(inputs)[1:])} per example "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})."
        ) from err
    return int(out.shape[-1])


def _check_labels(what: str, key: str, labels: np.ndarray, num_classes: int) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what}: the labels {key!r} have dtype {labels.dtype}; the cross-entropy takes "
            "integer class indices: cast them, e.g. labels.astype(np.int32)."
        )
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"{what}: labels {key!r} outside [0, {num_classes}) (the model's {num_classes} "
            f"outputs): {labels.ravel()[bad[:5]].tolist()} at examples {bad[:5].tolist()}"
            f"{' ...' if bad.size > 5 else ''}; map them to 0..{num_classes - 1} or build the "
            "model with as many outputs as there are classes."
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

    spec = BatchSpec(input_key, label_key, loss_from_logits is cross_entropy)
    return Model(init=init, loss=loss, logits=logits, apply=apply, batch_spec=spec)


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
    spec = BatchSpec(input_key, label_key, loss_from_logits is cross_entropy)
    return Model(init, loss, logits, apply, spec), params, state


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
