"""The declared rules of ``scissorhands tune``: the search space, the draw of trials,
repair length in steps, the objective, the choice, and the settings file the audit reads.

Everything here is data or a pure function of its arguments; the runner is
:mod:`scissorhands_jax.experiment.tune`, which re-exports these names.
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scissorhands_jax.experiment import protocol as proto

TUNING_SEED = 100
"""The seed of the tuning population (never reported by the audit)."""

DEFAULT_TRIALS = 8
"""Trials per method."""

TA_SLACK = 2.0
"""A trial is feasible when its TA is at least Retrain's TA minus this many points."""

OBJECTIVE = (
    "minimise |U-LiRA accuracy - 0.5| subject to TA >= TA(Retrain) - {slack:g} points "
    "(if no trial is feasible: the highest TA)"
)

SCISSORHANDS_SPACE: dict[str, list[Any]] = {
    "sparsity": [0.97, 0.99, 0.995, 0.999, 0.9995],
    "lr": [3e-3, 1e-2, 3e-2],
    "steps": [30, 60, 90],
    "lam": [0.0, 0.05, 0.2],
    "projection": ["gem", "orthogonal_on_conflict", "none"],
    "project_every": [1, 10],
}
"""The published method's knobs (all of them settings of the authors' release)."""

SOFT_SPACE: dict[str, list[Any]] = {
    **{k: v for k, v in SCISSORHANDS_SPACE.items() if k != "projection"},
    "project_epochs": [1, 2, 5],
}
"""The softer projection schedule: GEM only in the first ``project_epochs`` repair epochs
(the forget term keeps pulling afterwards, unprojected)."""

SEARCH_SPACE: dict[str, dict[str, list[Any]]] = {
    "scissorhands": SCISSORHANDS_SPACE,
    "scissorhands_cal": SCISSORHANDS_SPACE,
    "scissorhands_soft": SOFT_SPACE,
    "scissorhands_soft_cal": SOFT_SPACE,
    "ft": {"lr": [0.01, 0.03, 0.1, 0.3], "steps": [30, 60, 120, 240]},
    "ga": {"lr": [1e-3, 3e-3, 1e-2, 3e-2, 0.1], "steps": [2, 5, 10, 20]},
    "rl": {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "steps": [20, 40, 80, 160]},
    "l1_sparse": {"lr": [0.01, 0.03, 0.1], "steps": [30, 60, 120], "alpha": [1e-4, 1e-3, 1e-2]},
    "salun": {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "steps": [20, 40, 80], "ratio": [0.3, 0.5, 0.7]},
    "iu": {"alpha": [1.0, 10.0, 100.0, 1000.0, 10000.0], "damping": [0.1, 1.0, 10.0]},
    "be": {"lr": [1e-4, 1e-3, 1e-2, 0.1], "steps": [5, 10, 20, 40]},
    "bs": {"lr": [1e-4, 1e-3, 1e-2, 0.1], "steps": [5, 10, 20, 40], "bound": [0.03, 0.1, 0.3]},
    "scrub": {"lr": [1e-3, 5e-3, 2e-2], "steps": [9, 30, 60], "max_epochs": [1, 2, 5]},
}
"""Method -> hyperparameter -> the values tried (``steps``: see :func:`epochs_for`).
Hyperparameters not named keep the protocol's defaults
(:func:`scissorhands_jax.experiment.protocol.method_hyperparameters`)."""

EPOCH_DATA = {
    "ft": "retain",
    "l1_sparse": "retain",
    "scrub": "retain",
    "ga": "forget",
    "be": "forget",
    "bs": "forget",
    "rl": "forget+retain",
    "salun": "forget+retain",
    "scissorhands": "max(retain, forget)",
    **{variant: "max(retain, forget)" for variant in proto.VARIANTS},
}
"""What one epoch of each method passes over: the retain set, the forget set, their
union, or (Scissorhands' repair: retain and forget batches side by side) the larger."""


def epochs_for(method: str, steps: int, batch_size: int, n_retain: int, n_forget: int) -> int:
    """The epochs of ``method`` that take about ``steps`` optimiser steps.

    One epoch takes ``ceil(n / batch_size)`` steps, ``n`` the size of what the epoch
    passes over (:data:`EPOCH_DATA`); the result is ``steps`` divided by that, rounded,
    and at least 1.

    Raises:
      ValueError: a method without epochs, or a ``steps`` below 1.
    """
    if method not in EPOCH_DATA:
        raise ValueError(f"{method} has no epochs to set from steps; drop 'steps' from its space.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    sizes = {
        "retain": n_retain,
        "forget": n_forget,
        "forget+retain": n_retain + n_forget,
    }
    kind = EPOCH_DATA[method]
    if kind == "max(retain, forget)":
        per_epoch = max(math.ceil(n_retain / batch_size), math.ceil(n_forget / batch_size))
    else:
        per_epoch = math.ceil(sizes[kind] / batch_size)
    return max(1, round(steps / max(per_epoch, 1)))


def concrete_hyperparameters(
    method: str, chosen: dict[str, Any], protocol: proto.Protocol, data: proto.Population
) -> dict[str, Any]:
    """What ``method`` runs with on ``data``: the protocol's defaults, overridden by
    ``chosen``, with ``steps`` turned into epochs at this population's set sizes."""
    hps = {**proto.method_hyperparameters(method, protocol), **chosen}
    steps = hps.pop("steps", None)
    if steps is not None:
        n_retain = int(data.retains.sum(1).max())
        n_forget = int(data.forgets.sum(1).max())
        hps["epochs"] = epochs_for(method, steps, hps["batch_size"], n_retain, n_forget)
    return hps


def grid_size(space: dict[str, list[Any]]) -> int:
    """How many distinct settings a method's grid holds."""
    return math.prod(len(values) for values in space.values())


def sample_trials(method: str, space: dict[str, list[Any]], trials: int, seed: int) -> list[dict]:
    """``trials`` distinct settings of ``method`` drawn at random from its grid.

    The draw is a seeded permutation of the grid (seeded by ``seed`` and the method's
    name), so a larger ``trials`` extends the same list.

    Raises:
      ValueError: ``trials`` below 1 or above the grid's size, or an empty value list.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"--trials must be an integer >= 1, got {trials!r}.")
    empty = [name for name, values in space.items() if not values]
    if empty:
        raise ValueError(f"the search space of {method} has no values for {empty}.")
    size = grid_size(space)
    if trials > size:
        raise ValueError(
            f"--trials {trials} exceeds the {size} settings in the search space of {method}; "
            "lower --trials or widen the space (every method gets the same budget)."
        )
    rng = np.random.default_rng([seed, zlib.crc32(method.encode())])
    names = list(space)
    grid = list(itertools.product(*(space[n] for n in names)))
    return [dict(zip(names, grid[i], strict=True)) for i in rng.permutation(size)[:trials]]


def check_trials(method: str, trials: Sequence[dict[str, Any]], protocol: proto.Protocol) -> None:
    """Raises ValueError, naming the method and the setting, for a trial that the method
    would refuse (an unknown hyperparameter, a bad value), before any work."""
    from scissorhands_jax._method import check_settings
    from scissorhands_jax.baselines import HYPERPARAMETERS

    for params in trials:
        hps = {**proto.method_hyperparameters(method, protocol), **params}
        if "steps" in hps:
            epochs_for(method, hps.pop("steps"), 1, 1, 1)  # a method with epochs, steps >= 1
            hps["epochs"] = 1
        try:
            base = proto.base_method(method)
            if base == "scissorhands":
                check_settings(**hps)
            else:
                HYPERPARAMETERS[base].of(base, hps)
        except ValueError as err:
            raise ValueError(f"the search space of {method}, trial {params}: {err}") from None


def objective(row: dict[str, Any]) -> float:
    """The tuning objective of an audit row: ``|U-LiRA accuracy - 0.5|`` (lower is better)."""
    return abs(float(row["ulira_accuracy"]) - 0.5)


def feasible(row: dict[str, Any], retrain_ta: float, ta_slack: float = TA_SLACK) -> bool:
    """Whether a row keeps test accuracy within ``ta_slack`` points of Retrain's."""
    return float(row["TA"]) >= retrain_ta - ta_slack


def choose(trials: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trial: the lowest objective among the feasible ones; if none is feasible,
    the highest TA (the least violating). Trials that failed (``error``) never win;
    None when every trial failed."""
    ran = [t for t in trials if not t.get("error")]
    ok = [t for t in ran if t["feasible"]]
    if ok:
        return min(ok, key=lambda t: (t["objective"], t["index"]))
    if ran:
        return max(ran, key=lambda t: (t["TA"], -t["index"]))
    return None


def load_settings(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A tune's settings, from the path of its ``settings.json`` or the dict itself.

    Raises:
      ValueError: a file that is missing, not JSON, or not a tune's settings.
    """
    if isinstance(source, dict):
        settings = source
    else:
        path = Path(source)
        try:
            settings = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"--settings {path}: cannot read a tune's settings.json ({err}); pass the "
                "settings.json written by scissorhands tune."
            ) from None
    need = ("tuning_seed", "trials_per_method", "space", "objective", "protocols")
    if not isinstance(settings, dict) or any(k not in settings for k in need):
        raise ValueError(
            f"--settings: not a tune's settings (needs {list(need)}); pass the settings.json "
            "written by scissorhands tune."
        )
    return settings


def tuned_hyperparameters(settings: dict[str, Any], protocol: str) -> dict[str, dict[str, Any]]:
    """Method -> the chosen hyperparameters (in steps) of ``protocol`` in ``settings``
    (methods whose every trial failed are left out)."""
    part = settings["protocols"].get(protocol, {}).get("methods", {})
    return {m: c["hyperparameters"] for m, c in part.items() if c.get("hyperparameters")}
