"""What every baseline shares: its result record, data checks, and the training loop.

A baseline is ``unlearn(model, params, model_state, *, retain, forget, key, **hp)``. It
trains an *objective* ``objective(model, trainable, model_state, batch, aux) -> (loss,
new_model_state)``: a module-level function (so the compiled step is cached on it),
``trainable`` is the pytree that the optimiser updates (the params, or the params plus
extra heads) and ``aux`` holds per-step arrays (a teacher's params, a schedule value) as
ordinary jit inputs, never in a closure.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._types import Batch, ModelState, Params, PRNGKey
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model

Objective = Callable[[Model, Any, ModelState, Batch, Any], tuple[jax.Array, ModelState]]


class UnlearnResult(NamedTuple):
    """What every method of :data:`scissorhands_jax.baselines.METHODS` returns.

    Attributes:
      params: the unlearned parameters (same structure, shapes and dtypes as the input).
      model_state: the model state afterwards (BatchNorm statistics; ``{}`` if none).
      log: one dict per epoch or phase (losses, step counts, seconds).
    """

    params: Params
    model_state: ModelState
    log: list[dict[str, Any]]


def check_arrays(data: Any, name: str) -> dict:
    """Validates array data (a pytree with a shared leading example axis) for a baseline.

    Raises:
      ValueError: for a batch source instead of arrays, no leaves, disagreeing example
        counts, or an empty set.
    """
    if callable(data):
        raise ValueError(
            f"the baselines take {name} data as arrays (a pytree such as "
            '{"image": x, "label": y}), not a batch source: relabelling and per-example '
            "gradients need the examples themselves."
        )
    leaves = jax.tree.leaves(data)
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if not leaves or len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"{name} data must be a pytree of arrays sharing a leading example axis; "
            f"got leading sizes {sorted(map(str, sizes))}."
        )
    if sizes == {0}:
        raise ValueError(f"the {name} set is empty; the method needs at least one example.")
    return jax.tree.map(np.asarray, data)


def num_examples(data: Any) -> int:
    """The size of the leading axis of array data."""
    return int(np.shape(jax.tree.leaves(data)[0])[0])


def check_positive(**values: Any) -> None:
    """Raises ValueError unless every value is a positive number (ints for ``epochs``-like
    names are checked by :func:`check_count`)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}.")


def check_count(low: int = 0, **values: Any) -> None:
    """Raises ValueError unless every value is an integer >= ``low``."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def num_classes(model: Model, params: Params, model_state: ModelState, inputs: Any) -> int:
    """The number of output classes, from the shape of the logits (no computation)."""
    out = jax.eval_shape(model.logits, params, model_state, inputs[:1])
    return int(out.shape[-1])


@functools.lru_cache(maxsize=64)
def sgd_chain(lr: float, momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """PyTorch-style SGD (coupled weight decay, then momentum), one object per setting so
    that compiled steps are reused across calls."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum))


def epoch_batches(data: dict, batch_size: int, key: PRNGKey, epoch: int) -> Iterable[Batch]:
    """The shuffled batches of epoch ``epoch`` (order drawn from ``fold_in(key, epoch)``)."""
    return array_source(data, batch_size)(jax.random.fold_in(key, epoch))


@functools.partial(jax.jit, static_argnames=("objective", "model", "tx"))
def objective_step(objective, model, tx, trainable, model_state, opt_state, batch, aux, tx_args):
    """One optimiser step on ``objective``; ``tx_args`` (a dict of arrays) go to
    ``tx.update`` as extra arguments. Returns the new triple and the loss."""
    (loss, new_state), grads = jax.value_and_grad(
        lambda t: objective(model, t, model_state, batch, aux), has_aux=True
    )(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable, **tx_args)
    return optax.apply_updates(trainable, updates), new_state, opt_state, loss


def run_pass(
    objective: Objective,
    model: Model,
    tx: optax.GradientTransformation,
    carry: tuple[Any, ModelState, Any],
    batches: Iterable[Batch],
    aux: Any = None,
    *,
    tx_args: dict[str, Any] | None = None,
    progress: bool = False,
    desc: str = "",
) -> tuple[tuple[Any, ModelState, Any], dict[str, Any]]:
    """One pass of ``objective`` over ``batches``.

    Args:
      objective: a module-level objective (see the module docstring).
      model: the :class:`Model`.
      tx: the optimiser (a cached object, e.g. from :func:`sgd_chain`).
      carry: ``(trainable, model_state, opt_state)``.
      batches: the batches of this pass.
      aux: per-step arrays for the objective.
      tx_args: extra arguments of ``tx.update`` (arrays, e.g. a freeze mask).
      progress: show a progress bar.
      desc: the bar's label and the error message's prefix.

    Returns:
      The new carry and ``{"loss": mean loss, "steps": n, "time_s": seconds}``.

    Raises:
      FloatingPointError: when the mean loss of the pass is not finite.
    """
    trainable, model_state, opt_state = carry
    start, losses = time.perf_counter(), []
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        trainable, model_state, opt_state, loss = objective_step(
            objective, model, tx, trainable, model_state, opt_state, batch, aux, tx_args or {}
        )
        losses.append(loss)
    mean = float(np.mean(jax.device_get(losses))) if losses else float("nan")
    if losses and not np.isfinite(mean):
        raise FloatingPointError(f"{desc}: the mean loss became {mean}; lower the learning rate.")
    entry = {"loss": mean, "steps": len(losses), "time_s": time.perf_counter() - start}
    return (trainable, model_state, opt_state), entry


def fit_objective(
    objective: Objective,
    model: Model,
    trainable: Any,
    model_state: ModelState,
    *,
    batches: Callable[[int], Iterable[Batch]],
    epochs: int,
    tx: optax.GradientTransformation,
    aux: Callable[[int], Any] = lambda epoch: None,
    tx_args: dict[str, Any] | None = None,
    progress: bool = False,
    desc: str = "unlearn",
) -> tuple[Any, ModelState, list[dict[str, Any]]]:
    """``epochs`` passes of ``objective``; ``batches(epoch)`` and ``aux(epoch)`` give the
    data and per-step arrays of each epoch, ``tx_args`` the optimiser's extra arguments.
    Returns ``(trainable, model_state, log)``."""
    carry = (trainable, model_state, tx.init(trainable))
    log = []
    for epoch in range(epochs):
        carry, entry = run_pass(
            objective,
            model,
            tx,
            carry,
            batches(epoch),
            aux(epoch),
            tx_args=tx_args,
            progress=progress,
            desc=f"{desc} {epoch + 1}/{epochs}",
        )
        log.append({"epoch": epoch, **entry})
    return carry[0], carry[1], log


def task_loss(model: Model, params: Params, model_state: ModelState, batch: Batch, aux: Any):
    """The model's own loss in training mode (``aux`` unused): plain fine-tuning."""
    del aux
    return model.loss(params, model_state, batch, True)


def relabel(data: dict, labels: np.ndarray, label_key: str) -> dict:
    """A copy of ``data`` with its labels replaced."""
    return {**data, label_key: np.asarray(labels, dtype=np.asarray(data[label_key]).dtype)}


def concat(a: dict, b: dict) -> dict:
    """Two array pytrees joined along the example axis."""
    return jax.tree.map(lambda x, y: np.concatenate([x, y]), a, b)


def tree_l1(params: Params) -> jax.Array:
    r""":math:`\|\theta\|_1` over every entry of every leaf."""
    return sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(params))
