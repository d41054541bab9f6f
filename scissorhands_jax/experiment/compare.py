"""The comparison runner: every method on the same forget requests, one row per method x seed.

A comparison runs one or more experiment configs (a file or the name of an installed
config, :func:`scissorhands_jax.experiment.config.find_config`), one scenario each. For
each config and seed it trains (or resumes, from the output directory) one original and one
retrained model with the code of ``scissorhands train`` (orbax checkpoints), runs every
requested method of :data:`scissorhands_jax.baselines.METHODS` from the original on the
same forget set, and evaluates each with the full suite
(:func:`scissorhands_jax.metrics.evaluation_suite`, Avg. Gap and ToW against Retrain, RTE);
one config's models and methods are a
:class:`~scissorhands_jax.experiment._compare_scenario.Scenario`.
The config says everything: the data set, model, forget request, the original's and
Retrain's schedules, Scissorhands' settings (its ``unlearn`` section) and the baselines'
hyperparameters (its ``methods`` section over their release defaults,
:func:`scissorhands_jax.experiment.config.methods_of`). Rows are written to
``results.json`` as they finish, so an interrupted run resumes where it stopped; a method
that fails becomes a row with its ``error``. The report files come from
:mod:`scissorhands_jax.experiment.report`.

This is the runner behind ``scissorhands compare`` and ``scissorhands demo`` (the two
digits-10 configs, Retrain and Scissorhands); it takes keyword arguments only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax.baselines import METHODS
from scissorhands_jax.experiment import _plots
from scissorhands_jax.experiment import report as _report
from scissorhands_jax.experiment._compare_scenario import (
    CONFIG_SECTIONS_OF_MODELS,
    Scenario,
    method_defaults,
    method_parameters,
)
from scissorhands_jax.experiment.report import ORIGINAL, REFERENCE
from scissorhands_jax.experiment.rules import SEED_LIMIT
from scissorhands_jax.experiment.rundir import read_state, run_directory, write_json_atomic
from scissorhands_jax.metrics import MIA_FEATURES, against_retrain

__all__ = [
    "CONFIG_SECTIONS_OF_MODELS",
    "DIGITS",
    "ORIGINAL",
    "REFERENCE",
    "ROW_KEYS",
    "method_defaults",
    "method_parameters",
    "results_tables",
    "run_compare",
]

DIGITS = ("digits10_random10", "digits10_class0")
"""The digits-10 protocol's configs (both scenarios): ``scissorhands demo``'s comparison."""

ROW_KEYS = ("scenario", "method", "seed")


def _is_seed(value: Any) -> bool:
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and 0 <= value < SEED_LIMIT
    )


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _check_finite(params) -> None:
    leaves = jax.device_get(jax.tree.leaves(params))
    if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
        raise FloatingPointError("the unlearned parameters contain NaN or infinity.")


def results_tables(rows: Sequence[dict[str, Any]], *, mia_feature: str = "entropy") -> str:
    """The Markdown tables of ``report.md`` for ``rows``, one per scenario in row order:
    mean ± std per method, the best unlearning method per column in bold, † on an MIA whose
    attack learned nothing (what ``scissorhands demo`` prints)."""
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    return _report.markdown_tables(rows, mia_feature=mia_feature, scenarios=scenarios)


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
    setting: str | os.PathLike | Sequence[str | os.PathLike],
    seeds: Sequence[int] = (0,),
    methods: Sequence[str] = tuple(METHODS),
    hyperparameters: dict[str, dict[str, Any]] | None = None,
    smoke: bool = False,
    config_overrides: Sequence[str] = (),
    data_dir: str | os.PathLike | None = None,
    mia_feature: str = "entropy",
    plot: bool = True,
    command: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> list[dict[str, Any]]:
    """Runs the comparison into ``out`` and returns all rows of ``out/results.json``.

    Per config (scenario) and seed every method, Retrain included, runs from the same
    original on the same forget set (see
    :class:`~scissorhands_jax.experiment._compare_scenario.Scenario`). Rows always include
    ``retrain`` (the reference) and ``original`` (the starting point).

    Resuming: a row already in ``out/results.json`` without ``error`` is kept, and models
    already trained in ``out`` are loaded (half-trained ones continue from their last
    checkpoint); failed rows are retried. Finished rows of other hyperparameters are
    replaced only with ``overwrite``. Avg. Gap and ToW of every row are recomputed with
    ``mia_feature``, so the rows and the report always name the same MIA. ``out`` is
    locked while the comparison runs
    (:func:`scissorhands_jax.experiment.rundir.run_directory`): a second comparison into
    it fails at once.

    Args:
      out: output directory (created); ``results.json``, ``results.csv``, ``report.md``
        and ``report.png`` go there, and the models to ``runs/seed<s>/`` (one config) or
        ``<scenario>/runs/seed<s>/`` (several).
      setting: the name of an installed config or the path of a config file (``.py``), or
        a sequence of them (one scenario each; :data:`DIGITS` is the digits-10 protocol).
      seeds: seeds of the forget set, the initialisation and the methods, distinct, each
        in ``[0, 2**31)``.
      methods: names of :data:`~scissorhands_jax.baselines.METHODS`.
      hyperparameters: ``{method: {name: value}}`` overrides of the methods' settings,
        over the config's (:func:`~scissorhands_jax.experiment.config.methods_of`); the
        same as ``config_overrides`` ``"methods.NAME.KEY=VALUE"`` (``"unlearn.KEY=VALUE"``
        for Scissorhands).
      smoke: merge each config's ``SMOKE`` section.
      config_overrides: ``"section.key=value"`` overrides of every config.
      data_dir: the configs' data directory (``data.data_dir``).
      mia_feature: the MIA in the Avg. Gap (one of the five SVC features or ``"loss"``).
      plot: write ``report.png`` (needs matplotlib: the ``plot`` extra).
      command: the command line to record in the report.
      overwrite: replace finished rows made with other hyperparameters.
      progress: show a progress bar.
      mesh: train, unlearn and evaluate data-parallel on this mesh (every method starts
        from parameters placed on it); None: one device.

    Returns:
      The rows, ordered by scenario, method and seed.

    Raises:
      ValueError: unknown setting, method, hyperparameter (or a value its method refuses),
        config key or MIA feature; a config given twice; a seed out of range; an output
        directory holding models of another training schedule or config, another
        command's files, a damaged state file, finished rows of other hyperparameters
        (without ``overwrite``), or in use by another process; matplotlib missing with
        ``plot``. All before any training.
    """
    from scissorhands_jax.experiment.config import config_names, find_config

    settings = [setting] if isinstance(setting, str | os.PathLike) else list(setting)
    paths = []
    for item in settings:
        try:
            paths.append(find_config(item))
        except ValueError:
            raise ValueError(
                f"unknown setting {str(item)!r}; use the name of an installed config "
                f"({', '.join(config_names())}) or the path of a config file."
            ) from None
    if not paths or len({p.stem for p in paths}) != len(paths):
        raise ValueError(f"--setting takes distinct configs (one scenario each); got {settings}.")
    backends = [
        Scenario(
            path,
            smoke=smoke,
            config_overrides=config_overrides,
            data_dir=data_dir,
            methods=methods,
            overrides=hyperparameters or {},
            mesh=mesh,
        )
        for path in paths
    ]
    if not seeds or len(set(seeds)) != len(seeds) or not all(map(_is_seed, seeds)):
        raise ValueError(f"--seeds must be distinct integers in [0, 2**31); got {list(seeds)}.")
    if mia_feature not in (*MIA_FEATURES, "loss"):
        raise ValueError(f"mia_feature must be one of {(*MIA_FEATURES, 'loss')}.")
    if plot:
        _plots.check_plotting()
    with run_directory(out, command=command) as out:  # one writer
        return _run(out, backends, seeds, methods, mia_feature, plot, command, overwrite, progress)


def _kept_rows(results_path: Path, hps: dict, overwrite: bool) -> list[dict[str, Any]]:
    """The rows of ``results.json`` to resume from (``hps``: ``{scenario: {method:
    hyperparameters}}``).

    Raises:
      ValueError: finished rows of a requested method made with other hyperparameters,
        unless ``overwrite`` (they would be replaced).
    """
    rows = read_state(
        results_path,
        [],
        kind=list,
        fix="delete it (its rows are computed again; trained models are kept), or choose "
        "another --out",
    )
    changed = sorted(
        {
            r["method"]
            for r in rows
            if r["method"] in hps.get(r["scenario"], {})
            and "error" not in r
            and not _same(r.get("hyperparameters"), hps[r["scenario"]][r["method"]])
        }
    )
    if changed and not overwrite:
        raise ValueError(
            f"{results_path} holds finished rows of {changed} made with other hyperparameters; "
            "pass --overwrite (overwrite=True) to replace them, or choose another --out."
        )
    return rows


def _agree_on_the_gap(rows: list[dict[str, Any]], mia_feature: str) -> bool:
    """Recomputes Avg. Gap and ToW of every finished row against its seed's Retrain with
    ``mia_feature``, so that the rows and the report's column name always agree (a run
    resumed with another ``--mia-feature`` keeps its rows, not their old gap); returns
    whether any row changed."""
    refs = {
        (r["scenario"], r["seed"]): r for r in rows if r["method"] == REFERENCE and "error" not in r
    }
    changed = False
    for row in rows:
        ref = refs.get((row["scenario"], row["seed"]))
        if "error" in row or ref is None:
            continue
        new = against_retrain(row, ref, mia_feature=mia_feature)
        if any(row.get(k) != v for k, v in new.items()):
            row.update(new)
            changed = True
    return changed


def _run(out, backends, seeds, methods, mia_feature, plot, command, overwrite, progress):
    """The body of :func:`run_compare`, in the locked ``out``."""
    from scissorhands_jax._versions import versions

    hps = {b.scenario: b.hyperparameters for b in backends}
    scenarios = list(hps)
    results_path = out / "results.json"
    stack = versions()  # each row records what made it (kept rows keep their own)
    for backend in backends:  # refuses models of other training settings first
        backend.open(out if len(backends) == 1 else out / backend.scenario)
    rows = _kept_rows(results_path, hps, overwrite)
    names = [REFERENCE, ORIGINAL] + [m for m in METHODS if m in methods and m != REFERENCE]

    def finished(scenario, name, seed):
        for r in rows:
            if (r["scenario"], r["method"], r["seed"]) == (scenario, name, seed):
                return "error" not in r and _same(r.get("hyperparameters"), hps[scenario][name])
        return False

    plan = [
        (backend, seed, [n for n in names if not finished(backend.scenario, n, seed)])
        for seed in seeds
        for backend in backends
    ]
    plan = [p for p in plan if p[2]]
    bar = tqdm(total=sum(len(p[2]) for p in plan), desc="compare", disable=not progress)

    def put(row):
        nonlocal rows
        rows = [r for r in rows if tuple(r[k] for k in ROW_KEYS) != tuple(row[k] for k in ROW_KEYS)]
        rows = _order([*rows, row], scenarios)
        write_json_atomic(results_path, rows)
        bar.update(1)

    for backend, seed, pending in plan:
        scenario = backend.scenario
        split = backend.split(scenario, seed)
        bar.set_postfix_str(f"{scenario} s{seed}: original")
        original, original_error = None, None
        if any(n != REFERENCE for n in pending):
            try:
                original = backend.original(scenario, seed, split)
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
            row["hyperparameters"] = hps[scenario][name]
            row["versions"] = stack
            try:
                if original_error is not None and name != REFERENCE:
                    raise RuntimeError(original_error)
                if name == ORIGINAL:
                    params, state, seconds = original
                elif name == REFERENCE:
                    params, state, seconds = backend.retrain(scenario, seed, split)
                else:
                    params, state, seconds = backend.unlearn(
                        name, seed, split, original[0], original[1], progress=False
                    )
                _check_finite(params)
                row.update(backend.evaluate(split, params, state, progress=False))
                row["rte_s"] = float(seconds)
                if name == REFERENCE:
                    reference = row
                if reference is not None:
                    row.update(against_retrain(row, reference, mia_feature=mia_feature))
            except Exception as err:  # a failed method is a row, never a lost run
                row["error"] = f"{type(err).__name__}: {err}"
            put(row)
    bar.close()
    if _agree_on_the_gap(rows, mia_feature):
        write_json_atomic(results_path, rows)
    _report.write_report(
        rows, out, mia_feature=mia_feature, command=command, plot=plot, scenarios=scenarios
    )
    return rows
