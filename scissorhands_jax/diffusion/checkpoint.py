"""Saving and restoring parameter trees of the generation runs with orbax.

A plain ``orbax.checkpoint.StandardCheckpointer`` directory per model: the unlearned
parameters have exactly the tree, shapes and dtypes of the original ones, so any
checkpoint restores with the original model's tree as the template.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np


def save_params(directory: str | os.PathLike, tree: Any) -> Path:
    """Writes ``tree`` to ``directory`` (which must not exist yet) and waits until it is
    committed.

    Raises:
      ValueError: ``directory`` already exists.
    """
    import orbax.checkpoint as ocp  # local: importing orbax is slow

    path = Path(directory).absolute()
    if path.exists():
        raise ValueError(f"{path} already exists; choose a new directory or delete it.")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, jax.device_get(tree))
        checkpointer.wait_until_finished()
    return path


def restore_params(directory: str | os.PathLike, like: Any) -> Any:
    """Restores the tree saved in ``directory`` with the structure, shapes and dtypes of
    ``like`` (e.g. the original model's parameters or a fresh ``init``).

    Raises:
      ValueError: ``directory`` does not exist.
    """
    import orbax.checkpoint as ocp  # local: importing orbax is slow

    path = Path(directory).absolute()
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}.")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), like)
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, abstract)
