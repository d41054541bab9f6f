"""Step-indexed training that can stop anywhere and resume to the same bits.

Step ``s`` of a run with ``n`` batches per epoch is batch ``i = s mod n`` of epoch
``e = s div n``, drawn from ``data`` with the key ``fold_in(key, e)`` (the rule of
:func:`scissorhands_jax.fit`). The learning-rate schedule reads the optimiser's own step
counter. So the :class:`~scissorhands_jax._loop.TrainState` is everything a resumed run
needs: restored from a checkpoint, it continues with exactly the batches, learning rates
and arithmetic of an uninterrupted run. Classifiers and diffusion models share it; they
differ in their step, built once per run (:func:`scissorhands_jax._training.train_step`
with the learning rate inside the optimiser, or
:func:`scissorhands_jax._objective.objective_step` with Adam's direction times ``lr``), and
in how often they log.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._loop import LossGuard, TrainState, ema_update, private_copy, report
from scissorhands_jax._objective import ObjectiveScalars, objective_step
from scissorhands_jax._preemption import stop_now
from scissorhands_jax._training import sgd, train_step
from scissorhands_jax._types import BatchSource, ModelLossFn, PRNGKey
from scissorhands_jax.parallel import mesh_of, on_mesh, shard_batch

logger = logging.getLogger(__name__)


def step_decay_sgd(
    lr: float,
    *,
    steps_per_epoch: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> optax.GradientTransformation:
    r"""PyTorch-style SGD (coupled weight decay, then momentum) with a step schedule.

    :math:`\eta_s = \text{lr} \cdot \gamma^{|\{m \in \text{milestones} : m \cdot n \le s\}|}`
    at step :math:`s` with :math:`n` = ``steps_per_epoch``: ``MultiStepLR`` stepped per
    epoch, as the release trains its originals (lr 0.1, milestones 91 and 136).

    Args:
      lr: initial learning rate.
      steps_per_epoch: batches per epoch.
      milestones: epochs at whose start the rate is multiplied by ``gamma``.
      gamma: the decay factor.
      momentum: SGD momentum.
      weight_decay: coupled L2 weight decay.

    Returns:
      The optax transformation (its schedule counter lives in the optimiser state).
    """
    boundaries = {int(m) * int(steps_per_epoch): gamma for m in milestones}
    schedule = optax.piecewise_constant_schedule(lr, boundaries) if boundaries else lr
    return sgd(schedule, momentum=momentum, weight_decay=weight_decay)


def _epoch_batches(data: BatchSource, key: PRNGKey, start: int):
    """Batches ``start, ...`` of the epoch ``key`` draws (skipping when ``data`` cannot
    start mid-epoch itself)."""
    batches = getattr(data, "batches", None)
    if batches is not None:
        return batches(key, start)
    return itertools.islice(data(key), start, None)


def fit_resumable(
    loss_fn: ModelLossFn,
    state: TrainState,
    data: BatchSource,
    *,
    key: PRNGKey,
    tx: optax.GradientTransformation,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    ema_decay: float | None = None,
    stop_step: int | None = None,
    save: Callable[[TrainState, dict], None] | None = None,
    save_every: int = 0,
    log_every: int = 0,
    progress: bool = False,
    desc: str = "train",
    mesh: jax.sharding.Mesh | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Trains from ``state.step`` to the run's last step (or ``stop_step``).

    Args:
      loss_fn: ``loss_fn(params, model_state, batch, train) -> (loss, new_state)``.
      state: where to start: ``TrainState(0, params, model_state, tx.init(params))`` for
        a new run (with ``ema=params`` to keep an EMA), or a restored state.
      data: a :data:`BatchSource` with ``num_batches``; one with ``batches(key, start)``
        (e.g. :class:`~scissorhands_jax.data.loader.ImageSource`) resumes mid-epoch
        without reading the skipped batches.
      key: the run's data key; epoch ``e`` uses ``fold_in(key, e)``.
      tx: the optimiser that made ``state.opt_state``.
      epochs: the run's length in epochs, or
      steps: its length in steps (give one of the two).
      lr: None: ``tx`` holds the learning rate (:func:`~scissorhands_jax._training.train_step`);
        a number: ``tx`` is an update direction (e.g.
        :func:`~scissorhands_jax._objective.adam_tx`) scaled by ``-lr``
        (:func:`~scissorhands_jax._objective.objective_step`, for a model without state).
      ema_decay: the EMA's decay; needs ``state.ema`` (None: no EMA).
      stop_step: stop after this many steps in total (preemption, tests); None: the end.
      save: ``save(state, info)`` is called every ``save_every`` steps and at the last
        step taken (``info`` has ``epoch`` and ``final``).
      save_every: steps between saves (0: only at the end).
      log_every: steps per log entry (0: one per epoch).
      progress: a progress bar over steps with rate and ETA.
      desc: the bar's label.
      mesh: train data-parallel on this mesh (:func:`~scissorhands_jax.parallel.data_mesh`):
        the state replicated, every batch split over the data axis (a batch that does not
        divide evenly runs replicated). None: the mesh the state's parameters were placed
        on (:func:`~scissorhands_jax.parallel.mesh_of`), else the default device.
      callback: ``callback(step, entry)`` after every log entry (e.g. to send the loss
        to a tracker).

    Inside a :class:`~scissorhands_jax._preemption.PreemptionGuard`, a SIGTERM makes the
    loop log and save (through ``save``) the step it is at and return early; the run
    continues from that state, bit-identical to an uninterrupted one. In a multi-process
    job every process stops at the same step (:func:`~scissorhands_jax._preemption.stop_now`).

    Returns:
      ``(state, log)``: the state at the last step, and one ``{"epoch", "step", "loss",
      "steps", "time_s"}`` per epoch (or ``log_every`` steps, or part of them) walked
      in this call.

    Raises:
      ValueError: ``data`` has no ``num_batches``, not exactly one of ``epochs`` and
        ``steps``, an EMA decay without an EMA in ``state`` (or the reverse), or
        ``stop_step`` / ``state.step`` out of range.
      FloatingPointError: at the step where the loss becomes non-finite or diverges
        (:class:`~scissorhands_jax._loop.LossGuard`; checked one step late, before any
        log entry or save that follows it): nothing past that step is logged or saved.
    """
    per_epoch = getattr(data, "num_batches", None)
    if not per_epoch:
        raise ValueError("fit_resumable needs a data source with num_batches >= 1.")
    if (epochs is None) == (steps is None):
        raise ValueError("fit_resumable: give the run's length as epochs or as steps.")
    if (ema_decay is None) != (state.ema is None):
        raise ValueError("ema_decay and the state's EMA go together: give both or neither.")
    total = epochs * per_epoch if steps is None else int(steps)
    end = total if stop_step is None else min(int(stop_step), total)
    if not 0 <= state.step <= end:
        raise ValueError(f"cannot run from step {state.step} to step {end} (of {total}).")
    one_step = _step_fn(loss_fn, tx, lr)  # compiled once for the run
    state = private_copy(state)  # the steps donate its arrays
    mesh = mesh_of(state.params) if mesh is None else mesh
    if mesh is not None:  # replicated state, every batch split over the data axis
        state = TrainState(state.step, *on_mesh(tuple(state)[1:], mesh))
    decay = None if ema_decay is None else jnp.float32(ema_decay)
    step = state.step
    log: list[dict[str, Any]] = []
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=not progress)
    losses, start, batches = [], time.perf_counter(), None
    guard, pending = LossGuard(), []
    while step < end:
        epoch, i = divmod(step, per_epoch)
        if batches is None:
            batches = _epoch_batches(data, jax.random.fold_in(key, epoch), i)
        batch = next(batches)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        state, loss = one_step(state, batch)
        if decay is not None:
            state = state._replace(ema=ema_update(state.ema, state.params, decay))
        losses.append(loss)
        step = state.step
        for checked in pending:  # the previous step's loss, while this one runs
            guard.check(*checked)
        pending = [(f"{desc} epoch {epoch}", step, loss, None, batch)]
        bar.update(1)
        epoch_done = step % per_epoch == 0
        window_done = len(losses) == log_every if log_every else epoch_done
        preempted = stop_now()  # every process of a job at the same step
        if window_done or step == end or preempted:
            for checked in pending:  # nothing is logged or saved past a diverged step
                guard.check(*checked)
            pending = []
            mean = float(np.mean(jax.device_get(losses)))
            log.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "loss": mean,
                    "steps": len(losses),
                    "time_s": time.perf_counter() - start,
                }
            )
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean:.4f}")
            report(desc, log[-1], callback)
            losses, start = [], time.perf_counter()
        if epoch_done:
            batches = None
        if save is not None and (
            preempted or (save_every and step % save_every == 0) or step == end
        ):
            for checked in pending:
                guard.check(*checked)
            pending = []
            save(state, {"epoch": step / per_epoch, "final": step == total})
        if preempted:
            logger.warning("%s: preempted at step %d of %d; state saved.", desc, step, total)
            break
    bar.close()
    return state, log


def _step_fn(loss_fn, tx, lr):
    """``step(state, batch) -> (state, loss)`` of the run: :func:`train_step` with the
    learning rate in ``tx`` (``lr`` None), else :func:`objective_step` scaling ``tx``'s
    direction by ``-lr``."""
    if lr is None:
        return train_step(loss_fn, tx)
    scalars = ObjectiveScalars(jnp.float32(1.0), jnp.float32(0.0), jnp.float32(lr))
    step = objective_step(loss_fn, tx)

    def one(state, batch):
        state, (loss, _) = step(state, (batch, None), scalars)
        return state, loss

    return one
