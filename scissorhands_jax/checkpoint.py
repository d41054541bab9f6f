"""Checkpoints of one run: an orbax ``CheckpointManager`` that refuses anything doubtful.

A run directory holds one sub-directory per saved step (orbax's layout). Each step keeps
two items: ``state`` (the pytree, orbax ``StandardSave``) and ``meta`` (JSON: the run's
identity, the tree's signature of paths, shapes and dtypes, a SHA-256 digest of every
leaf's bytes, and free-form info such as the step's epoch).

What is never silently used:

- a *partial* checkpoint: an orbax temporary directory left by an interrupted save, or a
  step directory without orbax's ``commit_success.txt``: opening the directory fails and
  names the path to delete;
- a *mismatched* one: a different identity (model, data, schedule) or a different tree
  signature than the caller expects: restoring fails and names the first differences;
- a *corrupt* one: orbax cannot read it, or the restored bytes do not hash to the saved
  digest: restoring fails and names the step to delete.

Saves are asynchronous (orbax writes in a background thread while training goes on);
:meth:`Checkpoints.wait` blocks until every save is on disk, and callers report success
only after it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

_TMP_MARK = ".orbax-checkpoint-tmp"
_COMMIT_FILE = "commit_success.txt"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, partial, mismatched or corrupt."""


def tree_signature(tree: Any) -> dict[str, str]:
    """``{path: "dtype[shape]"}`` of every leaf, e.g. ``{"['fc']['bias']": "float32[10]"}``."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype).name}{list(np.shape(leaf))}"
        for path, leaf in flat
    }


def tree_digest(tree: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes (host copies), in tree order."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        arr = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


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
    device = jax.devices()[0]

    def one(x):
        sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(device)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(one, like)


def check_directory(directory: str | os.PathLike) -> list[int]:
    """The committed steps of ``directory``; raises on any partial checkpoint in it.

    Raises:
      CheckpointError: an orbax temporary directory (an interrupted save) or a step
        directory (or one of its items) without ``commit_success.txt``.
    """
    directory = Path(directory)
    if not directory.exists():
        return []
    steps = []
    for entry in sorted(directory.iterdir()):
        if _TMP_MARK in entry.name:
            raise CheckpointError(
                f"{entry} is a partial checkpoint (an interrupted save); it is never used: "
                f"delete it (rm -r {entry}) to resume from the last complete step."
            )
        if not (entry.is_dir() and entry.name.isdigit()):
            continue
        incomplete = [p for p in (entry, *(c for c in entry.iterdir() if c.is_dir()))]
        incomplete = [p for p in incomplete if not (p / _COMMIT_FILE).exists()]
        if incomplete:
            raise CheckpointError(
                f"{entry} is a partial checkpoint ({incomplete[0].name} has no {_COMMIT_FILE}); "
                f"it is never used: delete it (rm -r {entry}) to resume from an earlier step."
            )
        steps.append(int(entry.name))
    return sorted(steps)


class Checkpoints:
    """The step checkpoints of one run, with an identity checked on every restore.

    Args:
      directory: the run's checkpoint directory (created on the first save).
      identity: JSON-able description of what produced the checkpoints (model, data,
        schedule); a directory written under another identity is refused.
      keep: how many most recent steps to keep.

    Raises:
      CheckpointError: the directory holds a partial checkpoint (:func:`check_directory`).
    """

    def __init__(self, directory: str | os.PathLike, *, identity: dict, keep: int = 3):
        self.directory = Path(directory).absolute()
        self.identity = _plain(identity)
        check_directory(self.directory)
        self._closed = False
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def steps(self) -> list[int]:
        """The committed steps, in increasing order."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree: Any, *, info: dict | None = None) -> None:
        """Starts saving ``tree`` as ``step`` (asynchronously; see :meth:`wait`).

        A step that already exists is left as it is (a resumed run re-reaching it).
        """
        if step in self._manager.all_steps():
            return
        meta = {
            "identity": self.identity,
            "signature": tree_signature(tree),
            "sha256": tree_digest(tree),
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
            return self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )["meta"]
        except Exception as err:  # orbax raises many types for unreadable files
            raise self._corrupt(step, err) from err

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``step`` (default: the latest) shaped like ``like``.

        Args:
          like: a pytree of arrays (or ``ShapeDtypeStruct``) with the expected structure,
            shapes and dtypes, e.g. a freshly initialised state.
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
            tree = self._manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like))),
            )["state"]
        except Exception as err:  # orbax raises many types for unreadable files
            raise self._corrupt(step, err) from err
        if tree_digest(tree) != meta.get("sha256"):
            raise self._corrupt(step, "the restored bytes do not match the saved SHA-256 digest")
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
