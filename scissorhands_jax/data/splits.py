"""Validation hold-out and forget requests over a labelled training split.

All indices here are *absolute*: positions in the data set's training split as stored
(the tfds record index, the sorted file list of a folder). A request is therefore
re-derivable from three saved things: the validation indices, the forget indices and the
split's size; ``retain = all - validation - forget``.

The release settings: 10 % of each class of the training split is held out as
validation (CIFAR: 45,000 training images remain; random 10 % forgets 4,500 of them).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scissorhands_jax._seed import check_seed

FORGET_KINDS = ("random", "class", "identity", "file")
"""How a forget set is chosen (see :func:`select_forget_indices`): random examples,
every example of some classes or identities, or indices read from a file."""


def _replace(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``;
    a failed write (a full disk) leaves no temporary file and names ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:
            err.filename = str(path)
        raise


def holdout_validation(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Per class c with n_c training examples, ``floor(fraction * n_c)`` of them, drawn by
    ``default_rng(seed).permutation`` of that class's indices (classes in increasing id).

    Args:
      labels: ``(n,)`` class ids of the training split.
      fraction: share of each class held out, in ``[0, 1)``.
      seed: the split seed.

    Returns:
      Sorted absolute indices of the validation examples.

    Raises:
      ValueError: ``fraction`` outside ``[0, 1)`` or a seed outside ``[0, 2**31)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}.")
    rng = np.random.default_rng(check_seed("split_seed", seed))
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(np.floor(fraction * members.size + 1e-9))
        held.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, np.int64)


def read_index_file(path: str | os.PathLike) -> np.ndarray:
    """Reads forget indices from ``.npy``, ``.json`` (a list) or text (one per line).

    Raises:
      ValueError: a missing file, or content that is not a list of integers.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"forget index file {path} does not exist.")
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            values = np.asarray(json.loads(path.read_text()))
        else:
            values = np.asarray([line for line in path.read_text().split() if line], dtype=float)
    except (ValueError, OSError) as err:
        raise ValueError(f"forget index file {path} is unreadable: {err}") from err
    values = np.asarray(values).ravel()
    if values.size and (
        not np.issubdtype(values.dtype, np.number) or np.any(values != np.round(values))
    ):
        raise ValueError(f"forget index file {path} must hold integers, got {values[:5]}...")
    return values.astype(np.int64)


def select_forget_indices(
    labels: np.ndarray,
    pool: np.ndarray,
    *,
    kind: str,
    fraction: float | None = None,
    seed: int = 0,
    classes: Sequence[int] | int | None = None,
    count: int | None = None,
    file: str | os.PathLike | None = None,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The forget set of one request, as absolute indices into the training split.

    - ``random``: ``floor(fraction * |pool|)`` examples,
      ``pool[sorted(default_rng(seed).choice(|pool|, k, replace=False))]`` (on digits-10
      with an all-train pool this is exactly :func:`select_forget`'s random10).
    - ``class``: every pool example whose label is in ``classes``.
    - ``identity``: as ``class`` over identity labels; either ``classes`` lists the
      identities, or ``count`` of them are drawn with ``default_rng(seed)`` from the
      identities present in the pool.
    - ``file``: the indices in ``file`` (:func:`read_index_file`).

    Args:
      labels: ``(n,)`` labels of the whole training split.
      pool: the indices that may be forgotten (the training split minus validation).
      kind: one of :data:`FORGET_KINDS`.
      fraction, seed, classes, count, file: the request's settings (see above).

    Returns:
      ``(forget_indices, forgotten_classes)``: sorted indices; the classes removed from
      the test set for TA (class and identity requests; empty otherwise).

    Raises:
      ValueError: an unknown kind, missing settings, a seed outside ``[0, 2**31)``,
        indices outside the pool or repeated, an empty forget set or one that leaves
        nothing to retain.
    """
    check_seed("forget seed", seed)
    pool = np.asarray(pool, np.int64)
    forgotten: tuple[int, ...] = ()
    if kind == "random":
        if fraction is None or not 0.0 < fraction < 1.0:
            raise ValueError(f"forget kind 'random' needs a fraction in (0, 1), got {fraction}.")
        k = int(np.floor(fraction * pool.size + 1e-9))
        chosen = np.sort(np.random.default_rng(seed).choice(pool.size, k, replace=False))
        idx = pool[chosen]
    elif kind in ("class", "identity"):
        present = np.unique(labels[pool])
        if classes is None and kind == "identity" and count is not None:
            if not 0 < count < present.size:
                raise ValueError(
                    f"identity forgetting of {count} identities needs 0 < count < "
                    f"{present.size} (the identities in the training split)."
                )
            classes = np.sort(np.random.default_rng(seed).choice(present, count, replace=False))
        if classes is None:
            raise ValueError(
                f"forget kind {kind!r} needs 'classes' (a class id or a list)"
                + (" or 'count' identities to draw." if kind == "identity" else ".")
            )
        forgotten = tuple(int(c) for c in np.atleast_1d(classes))
        missing = sorted(set(forgotten) - set(present.tolist()))
        if missing:
            raise ValueError(f"forget classes {missing} have no training example.")
        idx = pool[np.isin(labels[pool], forgotten)]
    elif kind == "file":
        if file is None:
            raise ValueError("forget kind 'file' needs 'file': a .npy, .json or text file.")
        idx = read_index_file(file)
        if np.unique(idx).size != idx.size:
            raise ValueError(f"forget index file {file} repeats indices.")
        outside = np.setdiff1d(idx, pool)
        if outside.size:
            raise ValueError(
                f"forget index file {file} names {outside.size} indices outside the training "
                f"pool (e.g. {outside[:5].tolist()}): indices are positions in the training "
                "split, and must avoid the held-out validation set (val_indices.npy)."
            )
        idx = np.sort(idx)
    else:
        raise ValueError(f"unknown forget kind {kind!r}; choose one of {FORGET_KINDS}.")
    if idx.size == 0:
        raise ValueError(f"the forget set of this {kind!r} request is empty.")
    if idx.size == pool.size:
        raise ValueError(
            "the forget set is the whole training set; nothing would be retained "
            "(train a new model instead)."
        )
    return idx.astype(np.int64), forgotten


@dataclass(frozen=True)
class SplitIndices:
    """Where every training example goes, as absolute indices.

    Attributes:
      num_train: size of the training split (after any ``limit``).
      val: held-out validation indices.
      forget: forget indices.
      forgotten_classes: classes dropped from the test set for TA (class-wise and
        identity requests), else empty.
    """

    num_train: int
    val: np.ndarray
    forget: np.ndarray
    forgotten_classes: tuple[int, ...] = ()

    @property
    def pool(self) -> np.ndarray:
        """Training examples of the original model: all minus validation."""
        return np.setdiff1d(np.arange(self.num_train), self.val)

    @property
    def retain(self) -> np.ndarray:
        """All minus validation minus forget."""
        return np.setdiff1d(self.pool, self.forget)

    def save(self, directory: str | os.PathLike, description: dict) -> None:
        """Writes ``forget_indices.npy``, ``val_indices.npy`` and ``split.json``
        (``description`` plus sizes), each through a temporary file and a rename."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, values in (("forget_indices.npy", self.forget), ("val_indices.npy", self.val)):
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(values, np.int64))
            _replace(directory / name, buffer.getvalue())
        info = {
            **description,
            "num_train": self.num_train,
            "num_val": int(self.val.size),
            "num_forget": int(self.forget.size),
            "num_retain": int(self.retain.size),
            "forgotten_classes": list(self.forgotten_classes),
            "retain": "all - val_indices - forget_indices (absolute training-split indices)",
        }
        _replace(directory / "split.json", json.dumps(info, indent=2).encode())

    def matches_saved(self, directory: str | os.PathLike) -> str | None:
        """None when ``directory`` holds no indices or the same ones; else why not.

        Raises:
          ValueError: a saved index file that does not load (damaged), named.
        """
        directory = Path(directory)
        for name, values in (("forget_indices.npy", self.forget), ("val_indices.npy", self.val)):
            path = directory / name
            if not path.exists():
                continue
            try:
                saved = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise ValueError(
                    f"{path} is damaged ({err}); delete it (the request is saved again) or "
                    "choose another run directory."
                ) from None
            if saved.shape != values.shape or np.any(saved != values):
                return (
                    f"{path} holds {saved.size} indices that differ from this config's "
                    f"{values.size}"
                )
        return None
