"""What every baseline shares: its result, its hyperparameters, data checks, the loop.

A baseline is ``unlearn(model, params, model_state, *, retain, forget, key, progress,
**hyperparameters)``; its hyperparameters are the fields of a frozen dataclass
(:class:`Hyperparameters`), the only copy of their defaults. It trains an *objective*
``objective(model, trainable, model_state, batch, aux) -> (loss, new_model_state)``,
where ``trainable`` is the pytree that the optimiser updates (the params, or the
params plus extra heads) and ``aux`` holds per-step arrays (a teacher's params, a
schedule value) as ordinary jit inputs, never in a closure. A run binds its objective,
model and optimiser into one step compiled once (:func:`make_step`); its passes run in
the one training loop, :func:`scissorhands_jax._loop.run_steps`.

A baseline runs where its parameters live: placed on a mesh
(:func:`scissorhands_jax.parallel.on_mesh`), every training pass runs data-parallel
(batches split over its data axis, the trained state on the mesh), as Scissorhands
does. The baselines take no mesh; the caller (``compare``, your script) places the
parameters once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scissorhands_jax._loop import LossGuard, TrainState, private_copy, run_steps
from scissorhands_jax._settings import check_int, check_momentum, check_real
from scissorhands_jax._training import sgd
from scissorhands_jax._types import Batch, Mask, ModelState, Params, PRNGKey
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model
from scissorhands_jax.parallel import mesh_of, on_mesh, shard_batch

Objective = Callable[[Model, Any, ModelState, Batch, Any], tuple[jax.Array, ModelState]]
Step = Callable[[TrainState, Batch, Any, dict[str, Any]], tuple[TrainState, jax.Array]]
"""``step(state, batch, aux, tx_args) -> (state, loss)``: one run's step (:func:`make_step`)."""


class UnlearnResult(NamedTuple):
    """What every method of :data:`scissorhands_jax.baselines.METHODS` returns.

    Attributes:
      params: the unlearned parameters (same structure, shapes and dtypes as the input).
      model_state: the model state afterwards (BatchNorm statistics; ``{}`` if none).
      log: one dict per epoch or phase (losses, step counts, seconds).
      mask: bool tree, True where an entry was re-initialised (Scissorhands) or may be
        updated (SalUn), for the methods that return one (the diffusion methods); else
        None.
    """

    params: Params
    model_state: ModelState
    log: list[dict[str, Any]]
    mask: Mask | None = None


def check_positive(**values: Any) -> None:
    """Raises ValueError unless every value is a positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}.")


def check_nonnegative(**values: Any) -> None:
    """Raises ValueError unless every value is a number >= 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Base of the baselines' hyperparameters: each method declares its own as the fields
    of a frozen subclass, checked when built (:meth:`check`)."""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raises ValueError for a value the method cannot run with."""

    @classmethod
    def of(cls, method: str, values: dict[str, Any]):
        """The hyperparameters of ``method`` from keywords.

        Raises:
          ValueError: a name that is not a field (naming the fields), or a bad value.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(
                f"{method} has no hyperparameter(s) {unknown}; it takes {sorted(names)}."
            )
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class SGDHyperparameters(Hyperparameters):
    """Epochs of PyTorch-style SGD (coupled weight decay, then momentum).

    Attributes:
      lr: learning rate.
      epochs: passes over the method's data.
      batch_size: examples per step.
      momentum: SGD momentum.
      weight_decay: coupled L2 weight decay.
    """

    lr: float
    epochs: int
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def check(self) -> None:
        check_positive(lr=self.lr)
        check_int("epochs", self.epochs, 0)
        check_int("batch_size", self.batch_size, 1)
        check_momentum(self.momentum)
        check_real("weight_decay", self.weight_decay, low=0.0, hint="coupled L2 decay")

    def tx(self, *, masked: bool = False) -> optax.GradientTransformation:
        """The optimiser of these settings: :func:`scissorhands_jax.sgd` (``masked``:
        followed by :func:`freeze`)."""
        tx = sgd(self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return optax.chain(tx, freeze()) if masked else tx


@dataclasses.dataclass(frozen=True)
class LabelledHyperparameters(SGDHyperparameters):
    """SGD on labelled examples.

    Attributes:
      input_key, label_key: the batch entries of inputs and integer labels.
    """

    input_key: str = "image"
    label_key: str = "label"


class FreezeState(NamedTuple):
    """:func:`freeze` keeps no state."""


def freeze() -> optax.GradientTransformationExtraArgs:
    """Zeroes the updates of entries where the mask is False: chain it *last*.

    The mask is the extra argument ``freeze_mask`` of ``update`` (a boolean pytree
    shaped like the params, True = trainable), so one transform serves every mask and
    the mask is an input of a compiled step, not a constant baked into it. Frozen
    updates become ``-0.0``, the one value with ``x + (-0.0) == x`` bit for bit for every
    float ``x`` (``+0.0`` would turn a ``-0.0`` weight into ``+0.0``), so
    ``optax.apply_updates`` leaves frozen entries bit-identical whatever weight decay and
    momentum did upstream.

    Returns:
      An optax ``GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9),
      ...                  freeze())
      >>> p = {"w": jnp.array([1.0, -2.0])}
      >>> u, _ = tx.update({"w": jnp.ones(2)}, tx.init(p), p,
      ...                  freeze_mask={"w": jnp.array([True, False])})
      >>> optax.apply_updates(p, u)["w"].tolist()
      [0.8899999856948853, -2.0]
    """

    def init_fn(params):
        del params
        return FreezeState()

    def update_fn(updates, state, params=None, *, freeze_mask=None, **extra_args):
        del params, extra_args
        if freeze_mask is None:
            raise ValueError("freeze: pass freeze_mask= (a boolean tree) to update().")
        frozen = jax.tree.map(
            lambda u, m: jnp.where(m, u, jnp.asarray(-0.0, u.dtype)), updates, freeze_mask
        )
        return frozen, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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


def check_data(retain: Any, forget: Any) -> tuple[dict, dict]:
    """``(retain, forget)`` checked by :func:`check_arrays` (a method checks the set it
    does not use as well: bad input is an error whichever method reads it)."""
    return check_arrays(retain, "retain"), check_arrays(forget, "forget")


def check_keys(data: dict, name: str, *keys: str) -> None:
    """Raises ValueError when ``data`` lacks one of the entries ``keys``."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(
            f"{name} data has no {missing} entry; it has {sorted(data)}. Pass "
            "input_key=/label_key= naming the inputs and the integer labels."
        )


def num_examples(data: Any) -> int:
    """The size of the leading axis of array data."""
    return int(np.shape(jax.tree.leaves(data)[0])[0])


def num_classes(model: Model, params: Params, model_state: ModelState, inputs: Any) -> int:
    """The number of output classes, from the shape of the logits (no computation)."""
    out = jax.eval_shape(model.logits, params, model_state, inputs[:1])
    return int(out.shape[-1])


def epoch_batches(data: dict, batch_size: int, key: PRNGKey, epoch: int) -> Iterable[Batch]:
    """The shuffled batches of epoch ``epoch`` (order drawn from ``fold_in(key, epoch)``)."""
    return array_source(data, batch_size)(jax.random.fold_in(key, epoch))


def in_order(data: dict, batch_size: int) -> Iterable[Batch]:
    """The batches of ``data`` in its own order (the last one smaller)."""
    return array_source(data, batch_size, shuffle=False)(jax.random.key(0))


def _update(objective, model, tx, trainable, model_state, opt_state, batch, aux, tx_args):
    (loss, new_state), grads = jax.value_and_grad(
        lambda t: objective(model, t, model_state, batch, aux), has_aux=True
    )(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable, **tx_args)
    return optax.apply_updates(trainable, updates), new_state, opt_state, loss


def make_step(objective: Objective, model: Model, tx: optax.GradientTransformation) -> Step:
    """The training step of one run of ``objective``, compiled once for the run.

    ``objective``, ``model`` and ``tx`` are bound before ``jax.jit``; the step's
    arrays (the batch, ``aux``, the extra arguments of ``tx.update`` such as a freeze
    mask) are its traced inputs. The trainable tree and the optimiser state are donated:
    use the returned state.

    Returns:
      ``step(state, batch, aux, tx_args) -> (state, loss)`` on a
      :class:`~scissorhands_jax._loop.TrainState`.
    """
    update = jax.jit(functools.partial(_update, objective, model, tx), donate_argnums=(0, 2))

    def step(state: TrainState, batch: Batch, aux: Any, tx_args: dict[str, Any]):
        trainable, model_state, opt_state, loss = update(
            state.params, state.model_state, state.opt_state, batch, aux, tx_args
        )
        return TrainState(state.step + 1, trainable, model_state, opt_state), loss

    return step


def start_state(trainable: Any, model_state: ModelState, tx: Any) -> TrainState:
    """The state a baseline's passes start from: a copy of ``trainable`` and
    ``model_state`` (the steps donate their buffers; the caller's arrays, the original or
    a teacher sharing them, stay intact), ``tx``'s state, all on the mesh the trainable
    tree or the model state was placed on (:func:`~scissorhands_jax.parallel.mesh_of`)."""
    trainable, model_state = private_copy((trainable, model_state))
    state = TrainState(0, trainable, model_state, tx.init(trainable))
    mesh = mesh_of((trainable, model_state))
    return state if mesh is None else TrainState(0, *on_mesh(tuple(state)[1:], mesh))


def run_pass(
    step: Step,
    state: TrainState,
    batches: Iterable[Batch],
    aux: Any = None,
    *,
    tx_args: dict[str, Any] | None = None,
    progress: bool = False,
    desc: str = "",
    guard: LossGuard | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """One pass of ``step`` over ``batches``, in the loop of
    :func:`~scissorhands_jax._loop.run_steps`.

    Args:
      step: the run's step (:func:`make_step`).
      state: the :class:`~scissorhands_jax._loop.TrainState` (its ``params`` are the
        trainable tree).
      batches: the batches of this pass.
      aux: per-step arrays for the objective.
      tx_args: extra arguments of ``tx.update`` (arrays, e.g. a freeze mask).
      progress: show a progress bar.
      desc: the bar's label and the error message's prefix.
      guard: the run's :class:`~scissorhands_jax._loop.LossGuard`, shared by its passes of
        one objective (None: one for this pass).

    Returns:
      The new state and ``{"loss": mean loss, "steps": n, "time_s": seconds}``.

    Raises:
      FloatingPointError: when a loss of the pass becomes non-finite or diverges.
    """
    tx_args = tx_args or {}
    mesh = mesh_of(state.params)  # the batches follow the parameters' placement

    def loop_step(st, pair):
        batch = pair[0] if mesh is None else shard_batch(pair[0], mesh)
        st, loss = step(st, batch, aux, tx_args)
        return st, (loss, None)

    pairs = ((batch, None) for batch in batches)
    state, entries = run_steps(loop_step, state, pairs, progress=progress, desc=desc, guard=guard)
    if not entries:
        return state, {"loss": float("nan"), "steps": 0, "time_s": 0.0}
    entry = entries[0]
    return state, {"loss": entry["loss_retain"], "steps": entry["retain_steps"],
                   "time_s": entry["time_s"]}  # fmt: skip


def fit_objective(
    objective: Objective,
    model: Model,
    trainable: Any,
    model_state: ModelState,
    data: dict | Callable[[int], dict],
    key: PRNGKey,
    hp: SGDHyperparameters,
    *,
    aux: Callable[[int], Any] = lambda epoch: None,
    freeze_mask: Mask | None = None,
    progress: bool = False,
    desc: str = "unlearn",
) -> tuple[Any, ModelState, list[dict[str, Any]]]:
    """``hp.epochs`` passes of ``objective`` over ``data`` with the SGD of ``hp``.

    Epoch e runs on the batches of ``data`` (or of ``data(e)``, for data that changes
    every epoch) shuffled by ``fold_in(key, e)``, with the per-step arrays ``aux(e)``;
    a ``freeze_mask`` (a boolean tree) trains only its True entries (:func:`freeze`).

    Returns:
      ``(trainable, model_state, log)``, one log entry per epoch.

    Raises:
      FloatingPointError: when a loss becomes non-finite or diverges (one
        :class:`~scissorhands_jax._loop.LossGuard` over all the epochs).
    """
    tx = hp.tx(masked=freeze_mask is not None)
    tx_args = {} if freeze_mask is None else {"freeze_mask": freeze_mask}
    state = start_state(trainable, model_state, tx)
    step = make_step(objective, model, tx)
    log, guard = [], LossGuard()  # one for the run: its bound is the run's first loss
    for epoch in range(hp.epochs):
        batches = epoch_batches(data(epoch) if callable(data) else data, hp.batch_size, key, epoch)
        state, entry = run_pass(
            step, state, batches, aux(epoch), tx_args=tx_args,
            progress=progress, desc=f"{desc} {epoch + 1}/{hp.epochs}", guard=guard,
        )  # fmt: skip
        log.append({"epoch": epoch, **entry})
    return state.params, state.model_state, log


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
