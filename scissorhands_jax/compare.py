"""The comparison runner: every method on the same forget requests, one row per method x seed.

For each scenario and seed it trains (or loads from the output directory) one original
and one retrained model, runs every requested method of
:data:`scissorhands_jax.baselines.METHODS` from the original on the same forget set, and
evaluates each with the full suite (:func:`scissorhands_jax.metrics.evaluation_suite`,
Avg. Gap and ToW against Retrain, RTE). Rows are written to ``results.json`` as they
finish, so an interrupted run resumes where it stopped; a method that fails becomes a row
with its ``error``. The report files come from :mod:`scissorhands_jax._report`.

This is the runner behind ``scissorhands compare``; it takes keyword arguments only.
The setting is digits-10 (SPEC); the paper-scale settings plug in through
:data:`SETTINGS` once their data pipeline exists.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax import _report
from scissorhands_jax.baselines import METHODS
from scissorhands_jax.data import array_source, load_digits10
from scissorhands_jax.data.digits import SCENARIOS
from scissorhands_jax.demo import (
    TRAIN_DEFAULTS,
    UNLEARN_DEFAULTS,
    prepare_out_dir,
    split_predictions,
)
from scissorhands_jax.metrics import MIA_FEATURES, against_retrain, evaluation_suite, rte
from scissorhands_jax.models import DigitsCNN, linen_model
from scissorhands_jax.scissorhands import scissorhands as _scissorhands_fn
from scissorhands_jax.training import fit, sgd

DIGITS_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "ft": {"lr": 0.1, "epochs": 10, "batch_size": 64},
    "ga": {"lr": 0.03, "epochs": 5, "batch_size": 64},
    "rl": {"lr": 0.01, "epochs": 10, "batch_size": 64},
    "l1_sparse": {"alpha": 0.03, "lr": 0.01, "epochs": 10, "batch_size": 64},
    "salun": {"ratio": 0.5, "lr": 5e-3, "epochs": 10, "batch_size": 64},
    "iu": {"alpha": 1000.0, "damping": 1.0, "fisher_examples": 256, "batch_size": 64},
    "be": {"lr": 1e-4, "epochs": 10, "batch_size": 64},
    "bs": {"bound": 0.1, "lr": 1e-4, "epochs": 10, "batch_size": 64},
    "scrub": {"lr": 5e-3, "epochs": 3, "max_epochs": 2, "batch_size": 64, "forget_batch_size": 32},
    "scissorhands": {"eligible": "all_but_first_conv", **UNLEARN_DEFAULTS},
}
"""Each method's hyperparameters on digits-10 (Retrain uses the training schedule).

The release settings (SPEC "Baselines": epochs, ratios, bounds, T, ...) with batch 64,
IU's Fisher on 256 retain examples, and one value per method tuned on a seed that is not
reported (100): the learning rate (ℓ1-sparse and IU: α), chosen from a grid around the
release value by the mean Avg. Gap over both scenarios
(``experiments/results/digits10_compare/tune_baselines.py``, ``tuning.json``).
Scissorhands is not tuned: it is SPEC's digits-10 setting (``demo.UNLEARN_DEFAULTS``).
"""

SETTINGS = ("digits10",)
REFERENCE, ORIGINAL = "retrain", "original"
ROW_KEYS = ("scenario", "method", "seed")


def _digits_model():
    return linen_model(DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))


def method_parameters(name: str) -> set[str]:
    """The keyword hyperparameters method ``name`` accepts."""
    fn = _scissorhands_fn if name == "scissorhands" else METHODS[name]
    skip = {"model", "params", "model_state", "retain", "forget", "key", "progress"}
    return {
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in skip
    }


def resolve_hyperparameters(
    methods: Sequence[str], train: dict[str, Any], overrides: dict[str, dict[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """The hyperparameters of every row's method: digits defaults, then ``overrides``.

    Raises:
      ValueError: an unknown method or hyperparameter (naming the known ones).
    """
    overrides = overrides or {}
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(overrides) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}.")
    if REFERENCE in overrides:
        raise ValueError(
            "Retrain uses the training schedule of the original; change it with the train "
            "settings (--train-epochs, --train-lr), not with retrain.*."
        )
    schedule = {k: train[k] for k in ("lr", "epochs", "batch_size")}
    out = {REFERENCE: schedule, ORIGINAL: schedule}
    for name in methods:
        if name == REFERENCE:
            continue
        extra = overrides.get(name, {})
        bad = sorted(set(extra) - method_parameters(name))
        if bad:
            raise ValueError(
                f"{name} has no hyperparameter(s) {bad}; it takes "
                f"{sorted(method_parameters(name))}."
            )
        out[name] = {**DIGITS_HYPERPARAMETERS[name], **extra}
    return out


def _write_json(path: Path, payload: Any) -> None:
    _report.write_text_atomic(path, json.dumps(payload, indent=2))


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _save_model(path: Path, params, state) -> None:
    data = flax.serialization.to_bytes({"params": params, "state": state})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class _ModelCache:
    """Originals and retrains stored in ``OUT/models`` with their training seconds."""

    def __init__(self, out: Path, model, train: dict[str, Any]):
        self.dir = out / "models"
        self.dir.mkdir(exist_ok=True)
        self.model, self.train = model, train
        self.index_path = self.dir / "index.json"
        self.index = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        stored = self.index.get("train")
        if stored is not None and not _same(stored, train):
            raise ValueError(
                f"{out} holds models trained with {stored}, not {train}; pass a new --out "
                "(or the same train settings) to resume."
            )
        self.index["train"] = train
        self.index.setdefault("seconds", {})

    def get(self, name: str, make):
        """``(params, state, seconds)`` of model ``name``, trained by ``make()`` if absent."""
        path = self.dir / f"{name}.msgpack"
        if path.exists() and name in self.index["seconds"]:
            template = {"params": None, "state": None}
            template["params"], template["state"] = self.model.init(jax.random.key(0))
            restored = flax.serialization.from_bytes(template, path.read_bytes())
            return restored["params"], restored["state"], self.index["seconds"][name]
        (params, state), seconds = rte(make)
        _save_model(path, params, state)
        self.index["seconds"][name] = seconds
        _write_json(self.index_path, self.index)
        return params, state, seconds


def _evaluate(model, params, state, split) -> dict[str, float]:
    leaves = jax.device_get(jax.tree.leaves(params))
    if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
        raise FloatingPointError("the unlearned parameters contain NaN or infinity.")

    return evaluation_suite(**split_predictions(model, params, state, split))


def _order(rows: list[dict[str, Any]], scenarios: Sequence[str]) -> list[dict[str, Any]]:
    names = [REFERENCE, ORIGINAL, *METHODS]
    known = list(scenarios) + sorted({r["scenario"] for r in rows} - set(scenarios))
    return sorted(
        rows,
        key=lambda r: (
            known.index(r["scenario"]),
            names.index(r["method"]) if r["method"] in names else len(names),
            r["seed"],
        ),
    )


def run_compare(
    out: str | os.PathLike,
    *,
    setting: str = "digits10",
    scenarios: Sequence[str] = SCENARIOS,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    methods: Sequence[str] = tuple(METHODS),
    train: dict[str, Any] | None = None,
    hyperparameters: dict[str, dict[str, Any]] | None = None,
    mia_feature: str = "entropy",
    plot: bool = True,
    command: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Runs the comparison into ``out`` and returns all rows of ``out/results.json``.

    Per seed s: the original is trained on the full training split (init key ``s``,
    shuffling key ``1000 + s``, as ``scissorhands demo``); per scenario and seed, every
    method, Retrain included, runs from it with key ``2000 + s`` on the same forget set.
    Rows always include ``retrain`` (the reference) and ``original`` (the starting point).

    Resuming: a row already in ``out/results.json`` without ``error`` and with the same
    hyperparameters is kept, and models already in ``out/models`` are loaded, not
    retrained; failed rows are retried.

    Args:
      out: output directory (created); ``results.json``, ``results.csv``, ``report.md``,
        ``report.png`` and ``models/`` go there.
      setting: the data set and model; only ``"digits10"`` so far.
      scenarios: forget requests, any of ``"random10"``, ``"class0"``.
      seeds: seeds of the forget set (random10), the initialisation and the methods.
      methods: names of :data:`~scissorhands_jax.baselines.METHODS`.
      train: overrides of the original's (and Retrain's) schedule, keys of
        :data:`scissorhands_jax.demo.TRAIN_DEFAULTS`.
      hyperparameters: ``{method: {name: value}}`` overrides of
        :data:`DIGITS_HYPERPARAMETERS`.
      mia_feature: the MIA in the Avg. Gap (one of the five SVC features or ``"loss"``).
      plot: write ``report.png`` (needs matplotlib: the ``plot`` extra).
      command: the command line to record in the report.
      progress: show a progress bar.

    Returns:
      The rows, ordered by scenario, method and seed.

    Raises:
      ValueError: unknown setting, scenario, method, hyperparameter or MIA feature; an
        output directory holding models of another training schedule; matplotlib
        missing with ``plot``. All before any training.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; available: {SETTINGS}.")
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad or not scenarios:
        raise ValueError(f"scenarios must be a non-empty subset of {SCENARIOS}; got {scenarios}.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers; got {list(seeds)}.")
    if mia_feature not in (*MIA_FEATURES, "loss"):
        raise ValueError(f"mia_feature must be one of {(*MIA_FEATURES, 'loss')}.")
    unknown_train = set(train or {}) - set(TRAIN_DEFAULTS)
    if unknown_train:
        raise ValueError(f"unknown train setting(s) {sorted(unknown_train)}.")
    train_cfg = {**TRAIN_DEFAULTS, **(train or {})}
    hps = resolve_hyperparameters(methods, train_cfg, hyperparameters)
    if plot:
        _report.check_plotting()
    out = prepare_out_dir(out)
    model = _digits_model()
    cache = _ModelCache(out, model, train_cfg)
    results_path = out / "results.json"
    rows = json.loads(results_path.read_text()) if results_path.exists() else []
    names = [REFERENCE, ORIGINAL] + [m for m in METHODS if m in methods and m != REFERENCE]

    def finished(scenario, name, seed):
        for r in rows:
            if (r["scenario"], r["method"], r["seed"]) == (scenario, name, seed):
                return "error" not in r and _same(r.get("hyperparameters"), hps[name])
        return False

    plan = [
        (scenario, seed, [n for n in names if not finished(scenario, n, seed)])
        for seed in seeds
        for scenario in scenarios
    ]
    plan = [p for p in plan if p[2]]
    bar = tqdm(total=sum(len(p[2]) for p in plan), desc="compare", disable=not progress)

    def put(row):
        nonlocal rows
        rows = [r for r in rows if tuple(r[k] for k in ROW_KEYS) != tuple(row[k] for k in ROW_KEYS)]
        rows = _order([*rows, row], scenarios)
        _write_json(results_path, rows)
        bar.update(1)

    for scenario, seed, pending in plan:
        split = load_digits10(scenario, seed)

        def train_on(data, seed=seed):
            params, state = model.init(jax.random.key(seed))
            params, state, _ = fit(
                model.loss,
                params,
                state,
                array_source(data, train_cfg["batch_size"]),
                key=jax.random.key(1000 + seed),
                epochs=train_cfg["epochs"],
                tx=sgd(train_cfg["lr"]),
            )
            return params, state

        bar.set_postfix_str(f"{scenario} s{seed}: original")
        original, original_error = None, None
        if any(n != REFERENCE for n in pending):
            try:
                original = cache.get(
                    f"original_seed{seed}", lambda split=split: train_on(split.train)
                )
            except Exception as err:  # every row that needs it reports the failure
                original_error = f"training the original failed: {type(err).__name__}: {err}"
        reference = next(
            (
                r
                for r in rows
                if (r["scenario"], r["method"], r["seed"]) == (scenario, REFERENCE, seed)
                and "error" not in r
                and REFERENCE not in pending
            ),
            None,
        )
        for name in pending:
            bar.set_postfix_str(f"{scenario} s{seed}: {name}")
            row: dict[str, Any] = {"scenario": scenario, "method": name, "seed": int(seed)}
            row["hyperparameters"] = hps[name]
            try:
                if original_error is not None and name != REFERENCE:
                    raise RuntimeError(original_error)
                if name == ORIGINAL:
                    params, state, seconds = original
                elif name == REFERENCE:
                    params, state, seconds = cache.get(
                        f"retrain_{scenario}_seed{seed}",
                        lambda split=split, seed=seed: _retrain(model, split, seed, hps[REFERENCE]),
                    )
                else:
                    result, seconds = rte(
                        METHODS[name],
                        model,
                        original[0],
                        original[1],
                        retain=split.retain,
                        forget=split.forget,
                        key=jax.random.key(2000 + seed),
                        **hps[name],
                    )
                    params, state = result.params, result.model_state
                row.update(_evaluate(model, params, state, split))
                row["rte_s"] = float(seconds)
                if name == REFERENCE:
                    reference = row
                if reference is not None:
                    row.update(against_retrain(row, reference, mia_feature=mia_feature))
                    row["avg_gap_mia"] = f"MIA_{mia_feature}"
            except Exception as err:  # a failed method is a row, never a lost run
                row["error"] = f"{type(err).__name__}: {err}"
            put(row)
    bar.close()
    _report.write_report(
        rows, out, mia_feature=mia_feature, command=command, plot=plot, scenarios=scenarios
    )
    return rows


def _retrain(model, split, seed, schedule):
    result = METHODS[REFERENCE](
        model,
        None,
        None,
        retain=split.retain,
        forget=split.forget,
        key=jax.random.key(2000 + seed),
        **schedule,
    )
    return result.params, result.model_state
