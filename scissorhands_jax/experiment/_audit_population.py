"""The audit's models: a population trained at once, each member unlearned, outputs kept.

The membership audit (:mod:`scissorhands_jax.experiment.audit`) and the tuning of its
methods (:mod:`scissorhands_jax.experiment.tune`) train the same population of originals
and retrains, run a method on every member and score the members' logits. This module
does the training and the unlearning, and keeps each role's logits in an
:class:`OutputStore` so that a resumed run computes only what is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax import population as pop
from scissorhands_jax._training import sgd
from scissorhands_jax.experiment.protocol import Population, base_method
from scissorhands_jax.experiment.report import ORIGINAL, REFERENCE
from scissorhands_jax.experiment.rundir import read_state, write_bytes_atomic
from scissorhands_jax.parallel import on_mesh


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


class OutputStore:
    """Per-model outputs (logits on the pool and the test set) saved as ``.npz`` with a
    SHA-256 digest, so a resumed audit reuses them and a damaged file is retrained."""

    def __init__(self, out: Path):
        self.dir = out / "outputs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.dir / "index.json"
        self.index = read_state(
            self.index_path,
            {},
            kind=dict,
            fix="delete it (the outputs it indexes are computed again), or choose another --out",
        )

    def get(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.dir / f"{name}.npz"
        entry = self.index.get(name)
        if not isinstance(entry, dict) or "sha256" not in entry or not path.exists():
            return None
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None  # damaged: computed again
        if _digest(arrays) != entry["sha256"]:
            return None
        return {**arrays, "seconds": np.asarray(entry["seconds"])}

    def put(self, name: str, arrays: dict[str, np.ndarray], seconds: Sequence[float]) -> None:
        path = self.dir / f"{name}.npz"
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_bytes_atomic(path, buf.getvalue())
        self.index[name] = {"sha256": _digest(arrays), "seconds": [float(s) for s in seconds]}
        write_bytes_atomic(self.index_path, json.dumps(self.index, indent=2).encode())


def _outputs(model, params, state, data: Population) -> dict[str, np.ndarray]:
    """Logits of K stacked models on the pool and the test set."""
    return {
        "pool": pop.population_logits(model.logits, params, state, data.pool["image"]),
        "test": pop.population_logits(model.logits, params, state, data.test["image"]),
    }


def train_roles(model, protocol, data, store, roles, *, key, backend, progress):
    """The ``roles`` asked for, stacked: originals (on each model's half) and retrains (on
    the half without F*). A role's outputs go to ``store`` unless it holds them already."""
    tx = sgd(protocol.lr, weight_decay=protocol.weight_decay)
    trained = {}
    for role, membership in ((ORIGINAL, data.members), (REFERENCE, data.retains)):
        if role not in roles:
            continue
        if progress:
            tqdm.write(f"training {membership.shape[0]} {role} models")
        start = time.perf_counter()
        params, state = pop.train_population(
            model.loss,
            model.init,
            data.pool,
            membership,
            key=key,
            epochs=protocol.epochs,
            batch_size=protocol.batch_size,
            tx=tx,
            backend=backend,
        )
        jax.block_until_ready(params)
        seconds = (time.perf_counter() - start) / membership.shape[0]
        trained[role] = (params, state)
        if store.get(role) is None:
            store.put(role, _outputs(model, params, state, data), [seconds] * len(membership))
    return trained


def unlearn_all(name, hps, model, originals, data, *, seed, progress, unlearn=None, mesh=None):
    """Runs method ``name`` (through ``unlearn``, a function of its interface, if given)
    on every model of the population (each placed on ``mesh`` when given: the method
    then runs data-parallel); stacked outputs, seconds."""
    from scissorhands_jax.baselines import METHODS

    unlearn = unlearn or METHODS[base_method(name)]
    params, state = originals
    pool_logits, test_logits, seconds = [], [], []
    k_models = data.members.shape[0]
    held_out = {}
    if hps.get("calibration", "none") != "none":
        # Scissorhands' calibration reads held-out inputs: the test set, which no model of
        # the audit trains on (a temperature leaves argmax, so TA, unchanged)
        held_out = {"calibration_data": data.test}
    for k in tqdm(range(k_models), desc=name, disable=not progress, leave=False):
        p_k, s_k = pop.unstack_tree(params, k), pop.unstack_tree(state, k)
        if mesh is not None:
            p_k, s_k = on_mesh((p_k, s_k), mesh)
        retain = {n: v[data.retains[k]] for n, v in data.pool.items()}
        forget = {n: v[data.forgets[k]] for n, v in data.pool.items()}
        start = time.perf_counter()
        result = unlearn(
            model,
            p_k,
            s_k,
            retain=retain,
            forget=forget,
            key=jax.random.fold_in(jax.random.key(2000 + seed), k),
            **held_out,
            **hps,
        )
        jax.block_until_ready(result.params)
        seconds.append(time.perf_counter() - start)
        for out, part in ((pool_logits, data.pool), (test_logits, data.test)):
            logits = model.logits(result.params, result.model_state, jnp.asarray(part["image"]))
            out.append(np.asarray(logits))
    return {"pool": np.stack(pool_logits), "test": np.stack(test_logits)}, seconds
