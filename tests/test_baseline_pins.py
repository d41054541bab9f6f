"""Regression pins of every classifier baseline: same key, same result, across refactors.

``tests/pins/baselines.json`` was written by running this file with ``--write`` against
the package as it stood at commit 9a87e9c (extracted with ``git archive 9a87e9c`` into a
separate folder and put first on ``PYTHONPATH``), before the baselines moved onto the
shared training loop and declared their hyperparameters. It holds, per method, the
fingerprint of the unlearned parameters and model state (a BatchNorm model, so the
statistics count), the log without its timings, and the method's default
hyperparameters as the comparison discovered them then. These pins are no correctness
evidence (the independent references are in ``test_baselines.py``); they show that the
move changed nothing. ``python tests/test_baseline_pins.py --write`` records new pins,
which is only right for an intended change of behaviour explained in its commit.
Floats are compared within the measured spread across CPUs and XLA builds, the
hyperparameters, counts and phases exactly (``tests/_pinning.py``).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pinning import assert_matches_pin

import scissorhands_jax as shs
from scissorhands_jax.baselines import METHODS

pytestmark = pytest.mark.slow  # eleven methods trained end to end

PINS = Path(__file__).parent / "pins" / "baselines.json"

SETTINGS = {
    "retrain": {"lr": 0.05, "epochs": 2, "batch_size": 32},
    "ft": {"lr": 0.05, "epochs": 2, "batch_size": 32},
    "ga": {"lr": 0.01, "epochs": 2, "batch_size": 16},
    "rl": {"lr": 0.05, "epochs": 2, "batch_size": 32},
    "l1_sparse": {"alpha": 1e-3, "lr": 0.05, "epochs": 2, "batch_size": 32},
    "salun": {"ratio": 0.3, "lr": 0.05, "epochs": 2, "batch_size": 32},
    "iu": {"alpha": 5.0, "fisher_examples": 20, "chunk_size": 6, "batch_size": 32},
    "be": {"lr": 0.01, "epochs": 2, "batch_size": 16},
    "bs": {"bound": 0.2, "lr": 0.01, "epochs": 2, "batch_size": 16},
    "scrub": {"epochs": 2, "max_epochs": 1, "batch_size": 32, "forget_batch_size": 16},
    "scissorhands": {"epochs": 2, "batch_size": 32, "sparsity": 0.9, "lam": 0.1},
}
"""Small but non-trivial settings: several batches per epoch, two epochs, every phase."""


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


@functools.cache
def _problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(136, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 136).astype(np.int32)
    retain = {"image": x[:96], "label": y[:96]}
    forget = {"image": x[96:], "label": y[96:]}
    model = shs.linen_model(_BNNet(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    params, state = model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source({"image": x, "label": y}, 32),
        key=jax.random.key(1),
        epochs=1,
        tx=shs.sgd(0.05),
    )
    return model, params, state, retain, forget


def run_method(name: str):
    """The method's result on the pinned problem with key 7."""
    model, params, state, retain, forget = _problem()
    return METHODS[name](
        model, params, state, retain=retain, forget=forget, key=jax.random.key(7), **SETTINGS[name]
    )


def fingerprint(tree) -> list[list[float]]:
    """Per leaf: sum, sum of squares, and the first three entries (float64)."""
    out = []
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        x = np.asarray(leaf, np.float64).ravel()
        out.append([float(x.sum()), float((x**2).sum()), *map(float, x[:3])])
    return out


def log_without_times(log) -> list[dict]:
    """The log's entries without their (machine-dependent) seconds."""
    return [{k: v for k, v in e.items() if not k.endswith("time_s")} for e in log]


ADDED = {
    "scissorhands": {
        "precision": "float32",
        "ties": "exact",
        "project_epochs": None,
        "calibration": "none",
    }
}
"""Hyperparameters added after the pins, with the defaults that keep the pinned results:
checked, then left out of the comparison."""


def method_defaults(name: str) -> dict:
    """The method's default hyperparameters as the comparison of the package reports them,
    without those of :data:`ADDED` (after checking their defaults)."""
    from scissorhands_jax.experiment import compare

    defaults = compare.method_defaults(name)
    for key, value in ADDED.get(name, {}).items():
        assert defaults.pop(key) == value, (name, key)
    return defaults


def record(name: str) -> dict:
    result = run_method(name)
    return {
        "params": fingerprint(result.params),
        "model_state": fingerprint(result.model_state),
        "log": log_without_times(result.log),
        "defaults": method_defaults(name),
    }


@pytest.mark.parametrize("name", list(SETTINGS))
def test_baseline_matches_pin(name):
    want = json.loads(PINS.read_text())[name]
    got = json.loads(json.dumps(record(name)))  # the JSON round trip the pins went through
    assert_matches_pin(got, want, name)


def test_every_method_is_pinned():
    assert set(json.loads(PINS.read_text())) == set(METHODS) == set(SETTINGS)


if __name__ == "__main__" and "--write" in sys.argv:
    print("package:", shs.__file__)
    PINS.parent.mkdir(exist_ok=True)
    PINS.write_text(json.dumps({n: record(n) for n in SETTINGS}, indent=1) + "\n")
    print("wrote", PINS)
