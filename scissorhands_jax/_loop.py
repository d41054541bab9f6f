"""The one training loop: a step function driven over batch pairs, with a memory hook.

Scissorhands' repair (classifiers and diffusion models), the diffusion baselines and
plain step-based training all run through :func:`run_steps`; they differ only in the
step function they pass, ``step(state, batch) -> (state, metrics)``, built once per run
(its model, loss and optimiser bound before ``jax.jit``). :class:`TrainState` is what
every loop carries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._types import Batch, BatchSource, ModelState, Params, PRNGKey

logger = logging.getLogger(__name__)


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next.

    Attributes:
      step: steps taken so far (a Python int).
      params: parameters.
      model_state: model state (BatchNorm statistics; ``{}`` when there is none).
      opt_state: optimiser state (momentum, Adam's moments, the schedule's counter).
      ema: the exponential moving average of ``params``, or None when not kept.
      memory: the forget memory the steps of a :func:`run_steps` call project against,
        set by its ``memory_fn``; None outside such a call (never checkpointed).
    """

    step: int
    params: Params
    model_state: ModelState
    opt_state: optax.OptState
    ema: Params | None = None
    memory: Params | None = None

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
    """Projected steps so far: the ``projected`` counter of the projection's state
    wherever it sits in ``opt_state`` (a chain, a masked transform's state), 0 for an
    optimiser state without one."""
    count = optax.tree_utils.tree_get(opt_state, "projected", default=None)
    return 0 if count is None else int(count)


StepFn = Callable[[TrainState, tuple[Batch, Batch | None]], tuple[TrainState, tuple[Any, Any]]]
"""``step(state, (b_r, b_f)) -> (state, (loss_retain, loss_forget))``: one optimiser step
on a retain batch and a forget batch (``b_f`` None: retain only, and its forget loss is
ignored), advancing ``state.step`` by one and projecting against ``state.memory`` where
it projects."""


DIVERGENCE_FACTOR = 1e3
r"""A run has diverged when a step's loss exceeds this many times
:math:`\max(|L_0|, 1)`, :math:`L_0` the first loss of the run.

Steps at a usable learning rate keep the loss within a small multiple of its start (a
repair's forget term can lift the retain loss several-fold); and the losses of this
package sit near 1 for a model that knows nothing (cross-entropy :math:`\log C` for a
uniform guess over C classes, between 0.7 and 4.6 here; the noise-prediction error 1
for a network that predicts zero noise). A loss a thousand times both its start and that
scale (a cross-entropy of 1000 is a logit margin of 1000 against the true class) means
the parameters have been thrown out of any region a model was trained in: the learning
rate (or the forget weight) is too large, and every further step only wastes time, or
worse, ends in a model that looks trained. (SGD at lr 10 on the digits CNN jumps from
2.3 to :math:`10^{23}` within an epoch and then settles at a loss of 9, four times
chance; at lr 50 it jumps to 8000 at the second step and ends at chance.) Measured on
this package's own runs, the retain loss peaks at 2.7 times that base over the whole
test suite and at 8.9 times in the digits demo (class-0 forgetting, whose forget term
lifts the retain loss), so the factor leaves two orders of magnitude of room."""

DIVERGENCE_ADVICE = "lower the learning rate (or, when unlearning, the forget weight lam)."
"""What every divergence error tells the user to do."""


def batch_problem(batch: Batch | None, name: str) -> str | None:
    """A sentence naming what is wrong with a batch (NaN or inf in a float entry), or
    None when nothing is; for the error of a step whose loss is not finite."""
    if batch is None:
        return None
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(batch))[0]
    for path, leaf in flat:
        x = np.asarray(leaf)
        if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
            where = jax.tree_util.keystr(path) or "the batch"
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            return (
                f"the {name} batch holds {bad} NaN or inf value(s) in {where}: the data, "
                "not the optimiser, is at fault; clean or drop those examples."
            )
    return None


class LossGuard:
    r"""The divergence rule of every training loop in this package, in one place.

    A run has diverged, and stops at the step it happens with a FloatingPointError, when

    * a step's loss is not finite (NaN or inf), or
    * a step's loss :math:`L_s` exceeds ``factor`` times :math:`\max(|L_0|, 1)`,
      :math:`L_0` the first loss the guard saw (see :data:`DIVERGENCE_FACTOR`).

    The error names the step, the loss and the cause: a batch that holds NaN or inf when
    the loss is not finite because of it, else the divergence and
    :data:`DIVERGENCE_ADVICE`. Plain training (:func:`~scissorhands_jax.fit`,
    :func:`~scissorhands_jax.fit_resumable`, the models of
    :func:`~scissorhands_jax.population.train_population`, DDPM training), the baselines'
    passes and the Scissorhands repair all check every step through one guard per run
    (per model of a population), so a run that returns, logs, saves a checkpoint marked
    complete or reports results has passed it at every step. One guard can watch several
    calls of :func:`run_steps` (a repair's epochs), so :math:`L_0` stays the run's first
    loss.

    Args:
      factor: the divergence bound, in units of :math:`\max(|L_0|, 1)`.
    """

    def __init__(self, factor: float = DIVERGENCE_FACTOR):
        self.factor = factor
        self.start: float | None = None

    def check(
        self,
        desc: str,
        step: int,
        l_r: Any,
        l_f: Any = None,
        b_r: Batch | None = None,
        b_f: Batch | None = None,
    ) -> None:
        """Raises FloatingPointError if step ``step``'s losses are non-finite or diverged.

        Args:
          desc: the run's name, the message's prefix.
          step: the step's number.
          l_r: the step's (retain) loss, the one the divergence bound watches.
          l_f: its forget loss (None: none), only checked to be finite.
          b_r: its (retain) batch, searched for NaN or inf when a loss is not finite.
          b_f: its forget batch (None: none).
        """
        r = float(l_r)
        f = None if l_f is None else float(l_f)
        if not np.isfinite(r) or (f is not None and not np.isfinite(f)):
            losses = f"loss {r}" if f is None else f"retain loss {r}, forget loss {f}"
            cause = batch_problem(b_r, "retain") or batch_problem(b_f, "forget")
            finite = (
                "the batch is finite (are its labels within the model's classes?), so "
                if b_r is not None
                else ""
            )
            raise FloatingPointError(
                f"{desc}: the loss became non-finite at step {step} ({losses}); "
                + (cause or f"{finite}the training diverged: {DIVERGENCE_ADVICE}")
            )
        if self.start is None:
            self.start = r
        limit = self.factor * max(abs(self.start), 1.0)
        if r > limit:
            raise FloatingPointError(
                f"{desc}: the training diverged at step {step}: the loss is {r:.4g}, over "
                f"{self.factor:g} times max(its first value {self.start:.4g}, 1) (the "
                "parameters are destroyed long before the loss turns non-finite); "
                + DIVERGENCE_ADVICE
            )


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
    guard: LossGuard | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Runs ``step`` over ``pairs`` of (retain, forget) batches.

    The loop stops after ``steps`` steps, or when ``pairs`` ends or yields a None
    retain batch. Before step ``i`` (0-based) with ``i % memory_every == 0`` (with
    ``memory_every=0``: before the first step only) the memory is refreshed:
    ``state.memory = memory_fn(state, i)``; it is None before the first refresh and in
    the returned state.

    Every step's losses go through ``guard`` (:class:`LossGuard`), one step late so
    that reading them never stalls the steps already dispatched: a non-finite or
    diverging loss stops the run at most one step after the one it happened at, and the
    error names that step (``state.step`` after it) and its cause.

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
      guard: the :class:`LossGuard` (None: a new one for this call).
      callback: ``callback(step, entry)`` after every log entry (a tracker, a plot).

    Returns:
      ``(state, log)``; each entry has ``step`` (``state.step`` after it),
      ``loss_retain`` and ``loss_forget`` (means over its steps; ``loss_forget`` over
      the joint steps, None without any), ``joint_steps``, ``retain_steps``,
      ``projected_steps`` and ``time_s`` (seconds since the call began).

    Raises:
      FloatingPointError: when a loss becomes non-finite or the retain loss diverges.
    """
    guard = LossGuard() if guard is None else guard
    log: list[dict[str, Any]] = []
    state = state._replace(memory=None)
    start = time.perf_counter()
    r_losses: list[Any] = []
    f_losses: list[Any] = []
    pending: list[tuple[int, Any, Any, Batch, Batch | None]] = []
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
            state = state._replace(memory=memory_fn(state, i))
        i += 1
        state, (l_r, l_f) = step(state, (b_r, b_f))
        for checked in pending:  # the previous step's losses, while this one runs
            guard.check(desc, *checked)
        pending = [(state.step, l_r, l_f if b_f is not None else None, b_r, b_f)]
        r_losses.append(l_r)
        if b_f is not None:
            f_losses.append(l_f)
        bar.update(1)
        if log_every and len(r_losses) == log_every:
            log.append(_entry(state, r_losses, f_losses, projected_before, start))
            report(desc, log[-1], callback)
            projected_before = projected_count(state.opt_state)
            r_losses, f_losses = [], []
    bar.close()
    for checked in pending:
        guard.check(desc, *checked)
    if r_losses:
        log.append(_entry(state, r_losses, f_losses, projected_before, start))
        report(desc, log[-1], callback)
    return state._replace(memory=None), log


def report(desc: str, entry: dict[str, Any], callback=None, epochs: int | None = None) -> None:
    """Logs one line for a log ``entry`` (INFO on the ``scissorhands_jax`` loggers: quiet
    unless the application turns it on, as the command line does) and hands the entry to
    ``callback(step, entry)`` when one is given."""
    if logger.isEnabledFor(logging.INFO):
        losses = "  ".join(
            f"{k} {v:.4f}" for k, v in entry.items() if k.startswith("loss") and v is not None
        )
        epoch = entry.get("epoch")
        where = (
            f"epoch {epoch + 1}{f'/{epochs}' if epochs else ''}, " if isinstance(epoch, int) else ""
        )
        step = f"step {entry['step']}  " if "step" in entry else ""
        logger.info("%s: %s%s%s  (%.1f s)", desc, where, step, losses, entry.get("time_s", 0.0))
    if callback is not None:
        callback(entry.get("step", entry.get("epoch", 0)), entry)


def _entry(state, r_losses, f_losses, projected_before, start) -> dict[str, Any]:
    l_rs = np.asarray(jax.device_get(r_losses), np.float32)
    l_fs = np.asarray(jax.device_get(f_losses), np.float32)
    return {
        "step": state.step,
        "loss_retain": float(np.mean(l_rs)),
        "loss_forget": float(np.mean(l_fs)) if l_fs.size else None,
        "joint_steps": int(l_fs.size),
        "retain_steps": int(l_rs.size - l_fs.size),
        "projected_steps": projected_count(state.opt_state) - projected_before,
        "time_s": time.perf_counter() - start,
    }
