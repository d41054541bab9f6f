"""Checkpoints of one run: an orbax ``CheckpointManager`` that refuses anything doubtful
and gets past anything a killed job leaves behind.

A run directory (a local path or any ``etils.epath`` URL such as ``gs://bucket/run``)
holds one sub-directory per saved step (orbax's layout). Each step keeps two items:
``state`` (the pytree, orbax ``StandardSave``) and ``meta`` (JSON: the run's identity,
the tree's signature of paths, shapes and dtypes, a digest of every leaf
(:func:`tree_digest`), and free-form info such as the step's epoch).

What a killed or requeued job leaves is cleaned up, never used and never fatal:

- an *unfinished* save (killed at any moment, even inside an asynchronous save): an
  orbax temporary step, or a step whose items are not all committed, as orbax's public
  checks :func:`orbax.checkpoint.path.step.is_tmp_checkpoint` and
  :func:`~orbax.checkpoint.path.step.is_checkpoint_finalized` tell (plus orbax's
  commit marker in every item). :class:`Checkpoints` ignores it from the start and
  deletes it (process 0) before its first save, with a warning naming it each time, so
  the same command with ``--resume`` continues from the last complete step and ends
  bit-identical to an uninterrupted run; a reader that never saves leaves it alone.

What is never silently used:

- a *mismatched* checkpoint: a different identity (model, data, schedule) or a different
  tree signature than the caller expects: restoring fails and names the first
  differences;
- a *corrupt* one: orbax cannot read it, or the restored values do not match the saved
  digest: restoring fails and names the step to delete, in one line (the tracebacks
  that orbax's aborted parallel reads would print afterwards are dropped).

Saves are asynchronous (orbax writes in a background thread while training goes on);
:meth:`Checkpoints.wait` blocks until every save is on disk, and callers report success
only after it. :class:`~scissorhands_jax._preemption.PreemptionGuard` (re-exported here)
turns a SIGTERM into a request to save at the next step boundary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from scissorhands_jax._preemption import PreemptionGuard, preemption_requested  # noqa: F401
from scissorhands_jax._tree_digest import legacy_sha256, tree_digest

logger = logging.getLogger(__name__)
_COMMIT_FILE = ocp.path.atomicity.COMMIT_SUCCESS_FILE


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, mismatched or corrupt."""


def tree_signature(tree: Any) -> dict[str, str]:
    """``{path: "dtype[shape]"}`` of every leaf, e.g. ``{"['fc']['bias']": "float32[10]"}``."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype).name}{list(np.shape(leaf))}"
        for path, leaf in flat
    }


def _plain(value: Any) -> Any:
    """The JSON image of ``value`` (tuples become lists), for comparisons after a load."""
    return json.loads(json.dumps(value))


def _differences(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out = []
        for k in sorted(set(saved) | set(wanted), key=str):
            out += _differences(
                saved.get(k, "<absent>"), wanted.get(k, "<absent>"), f"{prefix}{k}."
            )
        return out
    return [] if saved == wanted else [f"{prefix[:-1]}: saved {saved!r}, now {wanted!r}"]


def _abstract(like: Any) -> Any:
    """Restore targets: each leaf's own sharding (an array's, or a ``ShapeDtypeStruct``'s),
    else the default device; orbax reads every shard straight into that layout. In a
    multi-process job a leaf without a sharding that spans the job (a host value, an
    array of this process only) is restored with a copy on every device, so that every
    process holds its values."""
    jobwide = jax.process_count() > 1
    if jobwide:
        everywhere = jax.sharding.Mesh(np.array(jax.devices()), ("devices",))
        default = jax.sharding.NamedSharding(everywhere, jax.sharding.PartitionSpec())
    else:
        default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def one(x):
        sharding = getattr(x, "sharding", None)
        if sharding is None or (jobwide and sharding.is_fully_addressable):
            sharding = default
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(one, like)


def _late_callback_of_a_closed_loop(unraisable: Any) -> bool:
    """True for the ``RuntimeError('Event loop is closed')`` that orbax's parallel reads
    raise after a failed restore: their callbacks fire once the read's event loop is
    gone and Python reports each one (tens of tracebacks for one damaged file)."""
    if unraisable.exc_type is not RuntimeError or "Event loop is closed" not in str(
        unraisable.exc_value
    ):
        return False
    tb = unraisable.exc_traceback
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


@contextlib.contextmanager
def _quiet_aborted_reads():
    """Drops the late callbacks of :func:`_late_callback_of_a_closed_loop` during an
    orbax read and, when the read fails, from then on (they arrive after the failure), so
    the one-line :class:`CheckpointError` is all a user sees; any other unraisable
    exception still goes to the previous hook."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _late_callback_of_a_closed_loop(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    orphans = _OrphanedReads()
    logging.getLogger("asyncio").addFilter(orphans)
    yield
    if sys.unraisablehook is hook:  # a successful read: nothing can arrive late
        sys.unraisablehook = previous
    logging.getLogger("asyncio").removeFilter(orphans)


class _OrphanedReads(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" records of orbax's parallel
    array reads: when a damaged checkpoint fails the restore, the reads that failed after
    the first are reported this way while their tasks are collected (on some stacks),
    with the same cause as the one-line :class:`CheckpointError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Task exception was never retrieved")
            and "async_deserialize" in message
        )


def _path(directory: str | os.PathLike) -> epath.Path:
    """An ``epath.Path``; local paths made absolute, URLs (``gs://...``) kept as given."""
    if "://" in os.fspath(directory):
        return epath.Path(directory)
    return epath.Path(os.path.abspath(os.fspath(directory)))


def _unfinished(entry: epath.Path) -> str | None:
    """Why ``entry`` is an unfinished save (None: it is not one, or not a step at all)."""
    if ocp.path.step.is_tmp_checkpoint(entry):
        return "an interrupted save (orbax temporary directory)"
    if not (entry.is_dir() and entry.name.isdigit()):
        return None
    if not ocp.path.step.is_checkpoint_finalized(entry):
        return "an interrupted save (not finalised)"
    items = [c for c in entry.iterdir() if c.is_dir()]
    missing = [c.name for c in items if not (c / _COMMIT_FILE).exists()]
    if missing:
        return f"incomplete ({missing[0]} has no {_COMMIT_FILE}: interrupted or half-copied)"
    return None


def _scan(directory: epath.Path) -> tuple[list[int], list[tuple[epath.Path, str]]]:
    """``(complete steps, [(unfinished entry, why)])`` of ``directory``."""
    if not directory.exists():
        return [], []
    steps, unfinished = [], []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        why = _unfinished(entry)
        if why is not None:
            unfinished.append((entry, why))
        elif entry.is_dir() and entry.name.isdigit():
            steps.append(int(entry.name))
    return sorted(steps), unfinished


def check_directory(directory: str | os.PathLike) -> list[int]:
    """The complete steps of ``directory`` (a cheap listing); unfinished saves are
    skipped, with a warning, and left in place.

    Args:
      directory: the run's checkpoint directory (missing: no steps).

    Returns:
      The steps whose save finished, in increasing order.
    """
    steps, unfinished = _scan(_path(directory))
    for entry, why in unfinished:
        logger.warning("checkpoint %s is %s; ignored (never used).", entry, why)
    return steps


def _delete(entries: list[epath.Path], directory: epath.Path) -> None:
    """Deletes ``entries`` on process 0; every process waits for it."""
    if jax.process_index() == 0:
        for entry in entries:
            entry.rmtree(missing_ok=True)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"scissorhands-clean:{directory}")


class Checkpoints:
    """The step checkpoints of one run, with an identity checked on every restore.

    What an interrupted job left unfinished (see the module docstring) is ignored from
    the start and deleted at the first :meth:`save` (both logged), so a requeued job
    continues from the last complete step, while a reader (an evaluation opening the
    directory of a job still running) never touches a save in progress.

    Args:
      directory: the run's checkpoint directory (a path or an ``etils.epath`` URL such
        as ``gs://bucket/run/checkpoints``; created on the first save).
      identity: JSON-able description of what produced the checkpoints (model, data,
        schedule); a directory written under another identity is refused.
      keep: how many most recent steps to keep (at least 1).

    Raises:
      ValueError: ``keep`` is not an integer >= 1.
    """

    def __init__(self, directory: str | os.PathLike, *, identity: dict, keep: int = 3):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(
                f"keep must be an integer >= 1 (the most recent steps kept), got {keep!r}."
            )
        self.directory = _path(directory)
        self.identity = _plain(identity)
        _, self._unfinished = _scan(self.directory)
        for entry, why in self._unfinished:
            logger.warning(
                "checkpoint %s is %s; ignored, and deleted at this run's first save.",
                entry,
                why,
            )
        self._closed = False
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def steps(self) -> list[int]:
        """The committed steps, in increasing order."""
        bad = {int(e.name) for e, _ in self._unfinished if e.name.isdigit()}
        return sorted(set(self._manager.all_steps()) - bad)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree: Any, *, info: dict | None = None) -> None:
        """Starts saving ``tree`` as ``step`` (asynchronously; see :meth:`wait`).

        A step that already exists is left as it is (a resumed run re-reaching it).
        """
        if self._unfinished:
            entries = [entry for entry, _ in self._unfinished]
            _delete(entries, self.directory)
            for entry in entries:
                logger.warning("deleted the unfinished checkpoint %s.", entry)
            self._unfinished = []
            self._manager.reload()
        if step in self.steps():
            return
        meta = {
            "identity": self.identity,
            "signature": tree_signature(tree),
            "digest": tree_digest(tree),
            "info": _plain(info or {}),
        }
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
            ),
        )

    def wait(self) -> None:
        """Blocks until every started save is committed to disk."""
        self._manager.wait_until_finished()

    def meta(self, step: int) -> dict:
        """The ``meta`` item of ``step``.

        Raises:
          CheckpointError: the step does not exist or its metadata is unreadable.
        """
        if step not in self.steps():
            raise CheckpointError(
                f"{self.directory} has no checkpoint of step {step} (it has {self.steps()})."
            )
        try:
            with _quiet_aborted_reads():
                return self._manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )["meta"]
        except Exception as err:  # orbax raises many types for unreadable files
            raise self._corrupt(step, err) from err

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``step`` (default: the latest) shaped like ``like``.

        Args:
          like: a pytree of arrays (or ``ShapeDtypeStruct``) with the expected structure,
            shapes and dtypes, e.g. a freshly initialised state; leaves that carry a
            sharding are restored straight into it (e.g. replicated or split over a
            mesh), the others onto the default device.
          step: which step.

        Returns:
          ``(tree, info)``: the restored pytree and the ``info`` saved with it.

        Raises:
          CheckpointError: no checkpoint, a mismatched identity or signature, or a
            corrupt checkpoint.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory} holds no checkpoint.")
        meta = self.meta(step)
        diffs = _differences(meta.get("identity"), self.identity)
        if diffs:
            raise CheckpointError(
                f"{self.directory} step {step} was written by a different run: "
                + "; ".join(diffs[:3])
                + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")
                + ". Use the config that wrote it, or another directory."
            )
        wanted = tree_signature(like)
        if meta.get("signature") != wanted:
            saved = meta.get("signature", {})
            diffs = [
                f"{k}: saved {saved.get(k, '<absent>')}, expected {wanted.get(k, '<absent>')}"
                for k in sorted(set(saved) | set(wanted))
                if saved.get(k) != wanted.get(k)
            ]
            raise CheckpointError(
                f"{self.directory} step {step} does not match the model of this config: "
                + "; ".join(diffs[:3])
                + "."
            )
        try:
            with _quiet_aborted_reads():
                tree = self._manager.restore(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like))),
                )["state"]
        except Exception as err:  # orbax raises many types for unreadable files
            raise self._corrupt(step, err) from err
        if "digest" in meta:
            intact = tree_digest(tree) == meta["digest"]
        else:  # written before shard-wise digests
            intact = legacy_sha256(tree) == meta.get("sha256")
        if not intact:
            raise self._corrupt(step, "the restored values do not match the saved digest")
        return tree, meta.get("info", {})

    def _corrupt(self, step: int, err: Any) -> CheckpointError:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return CheckpointError(
            f"{self.directory / str(step)} is corrupt and was not used ({first}); delete it "
            f"(rm -r {self.directory / str(step)}) to fall back to an earlier step, or start over."
        )

    def close(self) -> None:
        """Waits for pending saves, then releases the manager (again: a no-op)."""
        if self._closed:
            return
        self._closed = True
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
