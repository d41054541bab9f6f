"""Preemption: a cluster's SIGTERM becomes a request to save at the next step boundary.

:class:`PreemptionGuard` turns the signal into :func:`preemption_requested`; the
resumable training loop (:func:`scissorhands_jax.fit_resumable`) checks it after every
step, saves through its ``save`` hook and returns, and the command exits with status 75
(``EX_TEMPFAIL``: try again) for the scheduler to requeue it with ``--resume``.

Outside such a loop the command line turns SIGTERM into :class:`Preempted`, raised where
the program is: the command unwinds (its ``finally`` blocks run, atomic writes leave
every finished file whole) and exits with the same status; code that saves at a step
boundary first raises it itself once the state is saved.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

logger = logging.getLogger(__name__)

EXIT_PREEMPTED = 75
"""The exit status of a command that saved and stopped on a preemption notice."""

_PREEMPTED = threading.Event()


class Preempted(BaseException):
    """The command stops on a preemption notice (exit status :data:`EXIT_PREEMPTED`).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception``
    (a comparison's failed-method row) takes it for a failure of the work.
    """


def raise_preempted(signum, frame) -> None:
    """A signal handler that raises :class:`Preempted` (the command line's for SIGTERM)."""
    del frame
    raise Preempted(f"signal {signum}")


def preemption_requested() -> bool:
    """Whether a :class:`PreemptionGuard` caught its signal: save at this step boundary
    (:meth:`Checkpoints.save`, then :meth:`Checkpoints.wait`) and exit."""
    return _PREEMPTED.is_set()


class PreemptionGuard:
    """Within the ``with`` block, SIGTERM (a cluster's preemption notice) only sets
    :func:`preemption_requested` instead of killing the process, so the training loop
    saves at its next step boundary and exits; the previous handlers come back on exit.

    Multi-host jobs should ask JAX's coordination service instead (orbax's
    ``CheckpointManager.reached_preemption(step)``, built on
    ``jax.experimental.multihost_utils.reached_preemption_sync_point``), which makes
    every process save at the same step; the loops do not call either yet.

    Args:
      signals: the signals to catch (default: SIGTERM).
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = tuple(signals)
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        logger.warning(
            "signal %d received: saving at the next step boundary, then stopping.", signum
        )
        _PREEMPTED.set()

    def __enter__(self) -> PreemptionGuard:
        _PREEMPTED.clear()
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        _PREEMPTED.clear()  # a request belongs to the block that caught it
