"""The digits comparison's cache of trained models: msgpack files with a SHA-256 each.

``OUT/models/<name>.msgpack`` holds one model's parameters and state;
``OUT/models/index.json`` the training settings they were made with, each model's
training seconds (its RTE) and the SHA-256 of its file. A file that does not match its
digest is never used: it is said in the log and trained again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import flax.serialization
import jax

from scissorhands_jax.experiment.rundir import read_state, write_bytes_atomic, write_json_atomic
from scissorhands_jax.metrics import rte

logger = logging.getLogger(__name__)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


class ModelCache:
    """Originals and retrains stored in ``OUT/models`` with their training seconds and the
    SHA-256 of each file: a file that does not match its digest (damaged, truncated, or
    written by an older version without one) is said in the log and trained again,
    never used."""

    def __init__(self, out: Path, model, train: dict[str, Any]):
        self.dir = out / "models"
        self.model, self.train = model, train
        self.index_path = self.dir / "index.json"
        try:
            self.index = read_state(
                self.index_path, {}, kind=dict, fix="training every model again"
            )
        except ValueError as err:  # the models it indexes cannot be trusted: train them
            logger.warning("%s", err)
            self.index = {}
        stored = self.index.get("train")
        if stored is not None and not _same(stored, train):
            raise ValueError(
                f"{out} holds models trained with {stored}, not {train}; pass a new --out "
                "(or the same train settings) to resume."
            )
        self.index["train"] = train
        self.index.setdefault("seconds", {})

    def get(self, name: str, make):
        """``(params, state, seconds)`` of model ``name``, trained by ``make()`` if absent
        or damaged."""
        path = self.dir / f"{name}.msgpack"
        if path.exists() and name in self.index["seconds"]:
            restored = self._load(path, self.index.setdefault("sha256", {}).get(name))
            if restored is not None:
                return restored["params"], restored["state"], self.index["seconds"][name]
        (params, state), seconds = rte(make)
        self.dir.mkdir(exist_ok=True)
        data = flax.serialization.to_bytes({"params": params, "state": state})
        write_bytes_atomic(path, data)
        self.index["seconds"][name] = seconds
        self.index.setdefault("sha256", {})[name] = hashlib.sha256(data).hexdigest()
        write_json_atomic(self.index_path, self.index)
        return params, state, seconds

    def _load(self, path: Path, digest: str | None):
        """The stored tree, or None (logged) when ``path`` does not match ``digest``."""
        data = path.read_bytes()
        if digest is None:
            why = "it has no digest (written by an older version)"
        elif hashlib.sha256(data).hexdigest() != digest:
            why = "its SHA-256 does not match the one recorded when it was saved"
        else:
            template = {"params": None, "state": None}
            template["params"], template["state"] = self.model.init(jax.random.key(0))
            try:
                return flax.serialization.from_bytes(template, data)
            except Exception as err:  # msgpack raises many types for a bad file
                why = f"it does not parse ({type(err).__name__}: {err})"
        logger.warning("the cached model %s is not used: %s; training it again.", path, why)
        return None
