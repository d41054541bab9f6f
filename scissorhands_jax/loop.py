"""The one training loop: a step function driven over batch pairs, with a memory hook.

Scissorhands' repair (classifiers and diffusion models), the diffusion baselines and
plain step-based training all run through :func:`run_steps`; they differ only in the
step function they pass. :class:`TrainState` is what every loop carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._types import Batch, BatchSource, ModelState, Params, PRNGKey


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next.

    Attributes:
      step: steps taken so far (a Python int).
      params: parameters.
      model_state: model state (BatchNorm statistics; ``{}`` when there is none).
      opt_state: optimiser state (momentum, Adam's moments, the schedule's counter).
      ema: the exponential moving average of ``params``, or None when not kept.
    """

    step: int
    params: Params
    model_state: ModelState
    opt_state: optax.OptState
    ema: Params | None = None

    def tree(self) -> dict[str, Any]:
        """The arrays to checkpoint (the step goes into the checkpoint's step number)."""
        out = {"params": self.params, "model_state": self.model_state, "opt_state": self.opt_state}
        return out if self.ema is None else {**out, "ema": self.ema}

    @property
    def published(self) -> Params:
        """The weights to evaluate or sample from: the EMA when kept, else the parameters."""
        return self.params if self.ema is None else self.ema


def private_copy(tree: Any) -> Any:
    """A copy of ``tree``'s device arrays that donating steps may consume, so that the
    caller's arrays stay intact (host arrays are copied to the device by the step)."""
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)


@jax.jit
def ema_update(ema: Params, params: Params, decay: jax.Array) -> Params:
    r""":math:`\bar\theta \leftarrow d\,\bar\theta + (1 - d)\,\theta` with d = ``decay``
    (the DDPM ``EMAHelper``, applied after every optimiser step)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def cycle(source: BatchSource, key: PRNGKey) -> Iterator[Batch]:
    """Endless batches: epoch e of ``source`` is drawn with ``fold_in(key, e)``."""
    epoch = 0
    while True:
        empty = True
        for batch in source(jax.random.fold_in(key, epoch)):
            empty = False
            yield batch
        if empty:
            raise ValueError("the data source yielded no batch: is the data set empty?")
        epoch += 1


def projected_count(opt_state: Any) -> int:
    """Projected steps so far, read from a chain whose first transform is a projection
    (0 for any other optimiser state)."""
    first = opt_state[0] if isinstance(opt_state, tuple) and opt_state else None
    return int(first.projected) if hasattr(first, "projected") else 0


StepFn = Callable[
    [TrainState, Batch, Batch | None, Params | None, int], tuple[TrainState, Any, Any]
]
"""``step(state, b_r, b_f, memory, i) -> (state, loss_retain, loss_forget)``: one
optimiser step on a retain batch and a forget batch (None: retain only), ``i`` being
the 1-based index of the step in this call of :func:`run_steps`."""


def run_steps(
    step: StepFn,
    state: TrainState,
    pairs: Iterable[tuple[Batch | None, Batch | None]],
    *,
    steps: int | None = None,
    memory_fn: Callable[[TrainState, int], Params] | None = None,
    memory_every: int = 0,
    log_every: int = 0,
    progress: bool = False,
    desc: str = "train",
    total: int | None = None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Runs ``step`` over ``pairs`` of (retain, forget) batches.

    The loop stops after ``steps`` steps, or when ``pairs`` ends or yields a None
    retain batch. Before step ``i`` (0-based) with ``i % memory_every == 0`` (with
    ``memory_every=0``: before the first step only) the memory is refreshed by
    ``memory_fn(state, i)``.

    Args:
      step: the step function (see :data:`StepFn`).
      state: the starting :class:`TrainState`.
      pairs: ``(b_r, b_f)`` pairs; ``b_f`` None makes a retain-only step.
      steps: the most steps to take (None: until ``pairs`` ends).
      memory_fn: ``memory_fn(state, i) -> memory`` (None: no memory).
      memory_every: steps between memory refreshes (0: once, before the first step).
      log_every: steps per log entry (0: one entry for the whole call).
      progress: show a progress bar.
      desc: the bar's label and the error messages' prefix.
      total: the bar's length when ``steps`` is None.

    Returns:
      ``(state, log)``; each entry has ``step`` (``state.step`` after it),
      ``loss_retain`` and ``loss_forget`` (means over its steps; ``loss_forget`` over
      the joint steps, None without any), ``joint_steps``, ``retain_steps``,
      ``projected_steps`` and ``time_s`` (seconds since the call began).

    Raises:
      FloatingPointError: when a loss becomes non-finite.
    """
    log: list[dict[str, Any]] = []
    memory = None
    start = time.perf_counter()
    r_losses: list[Any] = []
    f_losses: list[Any] = []
    projected_before = projected_count(state.opt_state)
    bar = tqdm(total=steps if steps is not None else total, desc=desc, disable=not progress,
               leave=False)  # fmt: skip
    pairs = iter(pairs)
    i = 0
    while steps is None or i < steps:
        pair = next(pairs, None)
        if pair is None or pair[0] is None:
            break
        b_r, b_f = pair
        if memory_fn is not None and (i == 0 if memory_every == 0 else i % memory_every == 0):
            memory = memory_fn(state, i)
        i += 1
        state, l_r, l_f = step(state, b_r, b_f, memory, i)
        r_losses.append(l_r)
        if b_f is not None:
            f_losses.append(l_f)
        bar.update(1)
        if log_every and len(r_losses) == log_every:
            log.append(_entry(state, r_losses, f_losses, projected_before, start, desc))
            projected_before = projected_count(state.opt_state)
            r_losses, f_losses = [], []
    bar.close()
    if r_losses:
        log.append(_entry(state, r_losses, f_losses, projected_before, start, desc))
    return state, log


def _entry(state, r_losses, f_losses, projected_before, start, desc) -> dict[str, Any]:
    l_rs = np.asarray(jax.device_get(r_losses), np.float32)
    l_fs = np.asarray(jax.device_get(f_losses), np.float32)
    entry = {
        "step": state.step,
        "loss_retain": float(np.mean(l_rs)),
        "loss_forget": float(np.mean(l_fs)) if l_fs.size else None,
        "joint_steps": int(l_fs.size),
        "retain_steps": int(l_rs.size - l_fs.size),
        "projected_steps": projected_count(state.opt_state) - projected_before,
    }
    if not np.all(np.isfinite(l_rs)) or not np.all(np.isfinite(l_fs)):
        raise FloatingPointError(
            f"{desc}: the loss became non-finite by step {state.step} (retain "
            f"{entry['loss_retain']}, forget {entry['loss_forget']}); lower the learning "
            "rate or the forget weight (lam)."
        )
    entry["time_s"] = time.perf_counter() - start
    return entry
