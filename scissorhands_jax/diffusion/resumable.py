"""Step-indexed DDPM training that can stop anywhere and resume to the same bits.

Step ``s`` of a run with ``n`` batches per epoch is batch ``i = s mod n`` of epoch
``e = s div n``, drawn from the data with ``fold_in(k_data, e)`` where ``k_data`` is the
first of ``split(key, 3)``: the rule of :func:`~scissorhands_jax.diffusion.run_steps`.
The learning rate is constant and Adam's counter lives in the optimiser state, so
``(step, params, opt_state, ema)`` is everything a resumed run needs, and an
uninterrupted run equals :func:`~scissorhands_jax.diffusion.train_diffusion` with the
same key bit for bit (plus the EMA of the weights, when asked for).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._types import BatchSource, Params, PRNGKey
from scissorhands_jax.diffusion.model import DiffusionModel
from scissorhands_jax.diffusion.training import train_step


class DiffusionTrainState(NamedTuple):
    """Everything a DDPM training run carries from one step to the next.

    Attributes:
      step: steps taken so far (a Python int).
      params: the network's parameters.
      opt_state: the optimiser state (Adam's moments and counter).
      ema: the exponential moving average of ``params``, or None when not kept.
    """

    step: int
    params: Params
    opt_state: optax.OptState
    ema: Params | None = None

    def tree(self) -> dict[str, Any]:
        """The arrays to checkpoint (the step goes into the checkpoint's step number)."""
        out = {"params": self.params, "opt_state": self.opt_state}
        return out if self.ema is None else {**out, "ema": self.ema}

    @property
    def published(self) -> Params:
        """The weights to sample from: the EMA when kept, else the parameters."""
        return self.params if self.ema is None else self.ema


def init_train_state(
    model: DiffusionModel, key: PRNGKey, tx: optax.GradientTransformation, *, ema: bool
) -> DiffusionTrainState:
    """Step 0: ``model.init(key)``, ``tx.init`` and (with ``ema``) an EMA equal to the
    initial parameters."""
    params = model.init(key)[0]
    return DiffusionTrainState(0, params, tx.init(params), params if ema else None)


@jax.jit
def ema_update(ema: Params, params: Params, decay: jax.Array) -> Params:
    r""":math:`\bar\theta \leftarrow d\,\bar\theta + (1 - d)\,\theta` with d = ``decay``
    (the DDPM ``EMAHelper``, applied after every optimiser step)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def _batches(data: BatchSource, key: PRNGKey, start: int):
    return itertools.islice(data(key), start, None)


def fit_diffusion_resumable(
    model: DiffusionModel,
    state: DiffusionTrainState,
    data: BatchSource,
    *,
    key: PRNGKey,
    steps: int,
    tx: optax.GradientTransformation,
    lr: float,
    ema_decay: float | None = None,
    stop_step: int | None = None,
    save: Callable[[DiffusionTrainState, dict], None] | None = None,
    save_every: int = 0,
    log_every: int = 100,
    progress: bool = False,
    desc: str = "train",
) -> tuple[DiffusionTrainState, list[dict[str, Any]]]:
    """Trains on the ε-prediction loss from ``state.step`` to ``steps`` (or ``stop_step``).

    Args:
      model: the :class:`~scissorhands_jax.diffusion.DiffusionModel`.
      state: where to start (:func:`init_train_state` or a restored state).
      data: a :class:`~scissorhands_jax.diffusion.NoisedSource` with ``num_batches``.
      key: the run's key (the data key is ``split(key, 3)[0]``, as in ``run_steps``).
      steps: total steps of the run.
      tx: the update direction that made ``state.opt_state``, e.g.
        ``adam_direction(grad_clip)`` (hashable: build it once).
      lr: the learning rate.
      ema_decay: the EMA's decay; needs ``state.ema`` (None: no EMA).
      stop_step: stop after this many steps in total (preemption, tests); None: the end.
      save: ``save(state, info)`` every ``save_every`` steps and at the last step taken
        (``info`` has ``final``: whether the run is complete).
      save_every: steps between saves (0: only at the end).
      log_every: steps per log entry (mean loss over them).
      progress: a progress bar over steps.
      desc: the bar's label.

    Returns:
      ``(state, log)``, one ``{"step", "loss", "time_s"}`` per ``log_every`` steps taken
      in this call (and one for the remainder).

    Raises:
      ValueError: no ``num_batches``, an EMA decay without an EMA in ``state`` (or the
        reverse), or ``stop_step`` / ``state.step`` out of range.
      FloatingPointError: a loss that is not finite.
    """
    per_epoch = getattr(data, "num_batches", None)
    if not per_epoch:
        raise ValueError("fit_diffusion_resumable needs a data source with num_batches >= 1.")
    if (ema_decay is None) != (state.ema is None):
        raise ValueError("ema_decay and the state's EMA go together: give both or neither.")
    end = steps if stop_step is None else min(int(stop_step), steps)
    if not 0 <= state.step <= end:
        raise ValueError(f"cannot run from step {state.step} to step {end} (of {steps}).")
    k_data = jax.random.split(key, 3)[0]
    w_r, w_f, lr_arr = jnp.float32(1.0), jnp.float32(0.0), jnp.float32(lr)
    decay = None if ema_decay is None else jnp.float32(ema_decay)
    step, params, opt_state, ema = state
    log: list[dict[str, Any]] = []
    window: list[jax.Array] = []
    bar = tqdm(total=steps, initial=step, desc=desc, unit="step", disable=not progress)
    start, batches = time.perf_counter(), None
    while step < end:
        epoch, i = divmod(step, per_epoch)
        if batches is None:
            batches = _batches(data, jax.random.fold_in(k_data, epoch), i)
        batch = next(batches)
        params, opt_state, loss, _ = train_step(
            model.loss, tx, -1.0, params, opt_state, batch, None, w_r, w_f, lr_arr, None, None
        )
        if decay is not None:
            ema = ema_update(ema, params, decay)
        window.append(loss)
        step += 1
        bar.update(1)
        if step % per_epoch == 0:
            batches = None
        if len(window) == log_every or step == end:
            mean = float(np.mean(jax.device_get(window)))
            if not np.isfinite(mean):
                raise FloatingPointError(
                    f"{desc}: the loss is {mean} by step {step}; lower the learning rate."
                )
            log.append({"step": step, "loss": mean, "time_s": time.perf_counter() - start})
            bar.set_postfix(loss=f"{mean:.4f}")
            window = []
        if save is not None and ((save_every and step % save_every == 0) or step == end):
            save(DiffusionTrainState(step, params, opt_state, ema), {"final": step == steps})
    bar.close()
    return DiffusionTrainState(step, params, opt_state, ema), log
