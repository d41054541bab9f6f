"""Plain supervised training: the original model and the retrained oracle."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._loop import LossGuard, TrainState, private_copy, report
from scissorhands_jax._settings import check_momentum, check_real
from scissorhands_jax._types import Batch, BatchSource, ModelLossFn, ModelState, Params, PRNGKey
from scissorhands_jax.parallel import mesh_of, on_mesh, sharded_source


def sgd(
    lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> optax.GradientTransformation:
    """PyTorch-style SGD: coupled weight decay added to the gradient, then momentum.

    Args:
      lr: the learning rate (a number or an optax schedule).
      momentum: the momentum, in [0, 1) (at 1 or above the steps grow without bound).
      weight_decay: the coupled L2 weight decay, >= 0.

    Returns:
      The optax transformation.

    Raises:
      ValueError: a momentum outside [0, 1) or a negative or non-finite weight decay.
    """
    momentum = check_momentum(momentum)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0, hint="coupled L2 decay")
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum))


def train_update(loss_fn: ModelLossFn, tx, params, model_state, opt_state, batch):
    """One step on ``loss_fn`` in training mode, unjitted: the new ``(params,
    model_state, opt_state)`` and the loss. :func:`train_step` compiles it for one run;
    a program that trains many models at once (a population) calls it inside its own."""
    (loss, new_state), grads = jax.value_and_grad(
        lambda p: loss_fn(p, model_state, batch, True), has_aux=True
    )(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_state, opt_state, loss


def train_step(
    loss_fn: ModelLossFn, tx: optax.GradientTransformation
) -> Callable[[TrainState, Batch], tuple[TrainState, jax.Array]]:
    """The training step of one run, compiled once for it (``loss_fn`` and ``tx`` are
    bound before ``jax.jit``, so neither needs to be hashable).

    Args:
      loss_fn: ``loss_fn(params, model_state, batch, train) -> (loss, new_state)``.
      tx: the optimiser (the learning rate inside it).

    Returns:
      ``step(state, batch) -> (state, loss)`` on a :class:`~scissorhands_jax._loop.TrainState`
      (its EMA, if any, is left to the caller). The state's parameters, model state and
      optimiser state are donated: their buffers hold the new ones, so a step needs no
      second copy of the model on the device. Use the returned state; the arrays passed
      in are gone after the call (on devices that implement donation).
    """
    update = jax.jit(functools.partial(train_update, loss_fn, tx), donate_argnums=(0, 1, 2))

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, jax.Array]:
        params, model_state, opt_state, loss = update(
            state.params, state.model_state, state.opt_state, batch
        )
        new = state._replace(step=state.step + 1, params=params, model_state=model_state,
                             opt_state=opt_state)  # fmt: skip
        return new, loss

    return step


def fit(
    loss_fn: ModelLossFn,
    params: Params,
    model_state: ModelState,
    data: BatchSource,
    *,
    key: PRNGKey,
    epochs: int,
    tx: optax.GradientTransformation,
    progress: bool = False,
    desc: str = "train",
    mesh: jax.sharding.Mesh | None = None,
    shard_params: bool = False,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> tuple[Params, ModelState, list[dict[str, Any]]]:
    """Trains for ``epochs`` passes over ``data``, epoch e shuffled by ``fold_in(key, e)``.

    Args:
      loss_fn: ``loss_fn(params, model_state, batch, train) -> (loss, new_state)``.
      params: initial parameters.
      model_state: initial model state.
      data: a :data:`BatchSource` (see :func:`array_source`).
      key: the shuffling key.
      epochs: number of epochs.
      tx: the optimiser (e.g. :func:`sgd`).
      progress: show a progress bar.
      desc: the progress bar's label.
      mesh: train data-parallel on this mesh (see
        :func:`scissorhands_jax.parallel.data_mesh`): batches split over its data axis,
        parameters, state and optimiser state replicated. None: the mesh ``params`` were
        placed on (:func:`~scissorhands_jax.parallel.mesh_of`), else the default device.
      shard_params: with ``mesh``, split large parameter leaves over the data axis.
      callback: ``callback(epoch, entry)`` after every epoch.

    Returns:
      ``(params, model_state, log)`` with one ``{"epoch", "loss", "time_s"}`` per epoch.

    Raises:
      FloatingPointError: at the step where the loss becomes non-finite (naming a batch
        that holds NaN or inf when that is the cause) or diverges (see
        :class:`~scissorhands_jax._loop.LossGuard`).
      ValueError: an epoch without a batch.
    """
    params, model_state = private_copy((params, model_state))  # the steps donate them
    mesh = mesh_of((params, model_state)) if mesh is None else mesh
    if mesh is not None:
        params, model_state = on_mesh(params, mesh, shard=shard_params), on_mesh(model_state, mesh)
        data = sharded_source(data, mesh)
    opt_state = tx.init(params)
    if mesh is not None:
        opt_state = on_mesh(opt_state, mesh)
    state, one_step = TrainState(0, params, model_state, opt_state), train_step(loss_fn, tx)
    log = []
    total = getattr(data, "num_batches", None)
    guard, pending = LossGuard(), []
    for epoch in range(epochs):
        start, losses = time.perf_counter(), []
        batches = data(jax.random.fold_in(key, epoch))
        bar = tqdm(
            batches,
            total=total,
            desc=f"{desc} {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for batch in bar:
            state, loss = one_step(state, batch)
            for checked in pending:  # one step late: never stalls the dispatched step
                guard.check(*checked)
            pending = [(f"{desc} epoch {epoch}", state.step, loss, None, batch, None)]
            losses.append(loss)
        for checked in pending:
            guard.check(*checked)
        pending = []
        if not losses:
            raise ValueError(f"{desc}: epoch {epoch} drew no batch; is the data set empty?")
        mean = float(np.mean(jax.device_get(losses)))
        log.append({"epoch": epoch, "loss": mean, "time_s": time.perf_counter() - start})
        report(desc, log[-1], callback, epochs)
    return state.params, state.model_state, log
