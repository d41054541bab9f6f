"""Preemption: a cluster's SIGTERM becomes a request to save at the next step boundary.

:class:`PreemptionGuard` turns the signal into :func:`preemption_requested`; the
resumable training loop (:func:`scissorhands_jax.fit_resumable`) checks it after every
step, saves through its ``save`` hook and returns, and the command exits with status 75
(``EX_TEMPFAIL``: try again) for the scheduler to requeue it with ``--resume``.

In a multi-process job (``jax.distributed``) the processes must stop at the same step,
since saving is collective: there JAX's coordination service catches the SIGTERM of any
process and picks a step that every process reaches (:func:`stop_now`).

Outside such a loop the command line turns SIGTERM into :class:`Preempted`, raised where
the program is: the command unwinds (its ``finally`` blocks run, atomic writes leave
every finished file whole) and exits with the same status; code that saves at a step
boundary first raises it itself once the state is saved.
"""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import threading
from typing import Any

logger = logging.getLogger(__name__)

EXIT_PREEMPTED = 75
"""The exit status of a command that saved and stopped on a preemption notice."""

_PREEMPTED = threading.Event()
_SYNC_CALLS = itertools.count()  # this process's calls of the job's preemption sync point


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


def _in_job() -> bool:
    """Whether this process is one of several in a ``jax.distributed`` job."""
    if "jax" not in sys.modules:  # nothing has started JAX, so no job either
        return False
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


def stop_now() -> bool:
    """Whether a training loop should save and stop at this step boundary; call it once
    per step.

    One process: :func:`preemption_requested`. In a multi-process job, JAX's
    coordination service decides
    (``jax.experimental.multihost_utils.reached_preemption_sync_point``): once any
    process gets a SIGTERM, every process answers True at the same call, so that their
    collective save happens together. Every process must make the same calls; they are
    counted from 0 in each process (the service's counter, which a run resumed at step
    ``s`` could never reach if the calls were numbered by training step). Once True,
    :func:`preemption_requested` is True as well.

    Returns:
      True: save this step and stop.
    """
    if _in_job():
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(next(_SYNC_CALLS)):
            _PREEMPTED.set()
    return _PREEMPTED.is_set()


class PreemptionGuard:
    """Within the ``with`` block, SIGTERM (a cluster's preemption notice) only sets
    :func:`preemption_requested` instead of killing the process, so the training loop
    saves at its next step boundary and exits; the previous handlers come back on exit.

    In a multi-process job the guard leaves the signals to JAX's coordination service,
    which catches SIGTERM itself (see :func:`stop_now`).

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
        if _in_job():  # a handler here would replace the coordination service's
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        _PREEMPTED.clear()  # a request belongs to the block that caught it
