"""Tuning on the membership audit: every method, the same budget, a declared space.

A ranking of unlearning methods is only as fair as the tuning behind it: a method given
more trials, or a wider grid, can look better for that reason alone. This module tunes
every method of :data:`scissorhands_jax.baselines.METHODS` and every named variant of
:data:`scissorhands_jax.experiment.protocol.VARIANTS` (Retrain and the untouched
original are references, not tuned) under rules that are written down with the result:

- **The same budget.** Each method gets ``trials`` distinct settings drawn at random,
  without repeats, from its grid in :data:`SEARCH_SPACE` (one dict of method ->
  ``{hyperparameter: values}``); the draw is seeded, so a larger budget extends the same
  sequence of trials.
- **A tuning seed that is never reported.** The candidate forget set, the training
  halves and every key come from ``tuning_seed`` (default :data:`TUNING_SEED`); the audit
  refuses to report that seed with the settings it chose.
- **A declared objective.** ``|U-LiRA accuracy - 0.5|`` (0 = the attack cannot tell the
  method from Retrain), subject to TA >= Retrain's TA − ``ta_slack`` points. Trials that
  break the constraint are infeasible; if no trial is feasible, the least violating one
  (highest TA) is chosen and the settings say so.
- **Repair length in steps.** The grids hold ``steps``, optimiser steps on the tuning
  population; :func:`concrete_hyperparameters` turns them into the method's epochs at
  the size of the data it passes over (:data:`EPOCH_DATA`), so a setting means the same
  amount of training at another retain-set size.

The originals and retrains are trained once per protocol (their outputs are cached in
``out/<protocol>/outputs``); a trial only runs the method on every model. Every trial is
a line of ``out/<protocol>/trials.jsonl``; a resumed tune skips the trials already there.
The choice per method goes to ``out/settings.json``, which ``scissorhands audit
--settings`` reads. This is the runner behind ``scissorhands tune``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax.experiment import _audit_population, audit, report
from scissorhands_jax.experiment._tune_rules import (
    DEFAULT_TRIALS,
    EPOCH_DATA,
    OBJECTIVE,
    SCISSORHANDS_SPACE,
    SEARCH_SPACE,
    TA_SLACK,
    TUNING_SEED,
    check_trials,
    choose,
    concrete_hyperparameters,
    epochs_for,
    feasible,
    grid_size,
    load_settings,
    objective,
    sample_trials,
    tuned_hyperparameters,
)
from scissorhands_jax.experiment.rundir import (
    check_setting,
    run_directory,
    write_bytes_atomic,
    write_text_atomic,
)

__all__ = [
    "DEFAULT_TRIALS",
    "EPOCH_DATA",
    "OBJECTIVE",
    "SCISSORHANDS_SPACE",
    "SEARCH_SPACE",
    "TA_SLACK",
    "TUNING_SEED",
    "ReusedInfluence",
    "check_trials",
    "choose",
    "concrete_hyperparameters",
    "epochs_for",
    "feasible",
    "grid_size",
    "load_settings",
    "markdown",
    "objective",
    "run_tune",
    "sample_trials",
    "tuned_hyperparameters",
]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _one_line_per_trial():
    """Holds back the methods' per-epoch log lines (thousands over a tune) while a trial
    runs; the trial's own line replaces them."""
    epochs = logging.getLogger("scissorhands_jax._loop")
    level = epochs.level
    epochs.setLevel(logging.WARNING)
    try:
        yield
    finally:
        epochs.setLevel(level)


class ReusedInfluence:
    """IU with its direction :math:`F^{-1} v` kept across trials: the trials of IU differ
    in α, which only scales the step, and in the damping, so the Fisher solve runs once
    per model and damping, not once per trial. Same interface and same numbers as
    :func:`~scissorhands_jax.baselines.influence_unlearning`; a trial's seconds then
    count the solve only where it ran. One instance per population (models are told
    apart by their ``key``)."""

    def __init__(self):
        self.directions: dict[Any, tuple[Any, int]] = {}

    def __call__(self, model, params, model_state, *, retain, forget, key, progress=False,
                 **hyperparameters):  # fmt: skip
        from scissorhands_jax import baselines as iu

        del progress
        hp = iu.InfluenceHyperparameters.of("iu", hyperparameters)
        retain, forget = iu.check_data(retain, forget)
        start = time.perf_counter()
        token = (np.asarray(jax.random.key_data(key)).tobytes(), dataclasses.replace(hp, alpha=1))
        if token not in self.directions:
            self.directions[token] = iu.influence_direction(
                model, params, model_state, retain, forget, key, hp
            )
        direction, m = self.directions[token]
        return iu.influence_step(params, model_state, direction, hp.alpha, m, start)


def _key(method: str, params: dict[str, Any]) -> str:
    return json.dumps([method, params], sort_keys=True)


def _read_trials(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line: that trial runs again
    return rows


def _write_trials(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    write_bytes_atomic(path, text.encode())


def _trial_row(method, index, params, hps, outputs, seconds, retrain, data, *, protocol,
               seed, retrain_ta, ta_slack, num_bootstrap):  # fmt: skip
    row = audit.method_row(
        protocol, method, outputs, retrain, data, seed=seed, num_bootstrap=num_bootstrap
    )
    return {
        "method": method,
        "index": index,
        "params": params,
        "hyperparameters": hps,
        "ulira_accuracy": row["ulira_accuracy"],
        "ulira_auc": row["ulira_auc"],
        "UA": row["UA"],
        "RA": row["RA"],
        "TA": row["TA"],
        "objective": objective(row),
        "feasible": feasible(row, retrain_ta, ta_slack),
        "seconds": float(np.sum(seconds)),
        "model_seconds": [round(float(x), 3) for x in seconds],
    }


def run_tune(
    *,
    out: str | Path,
    protocols: Sequence[str | Path | audit.Protocol] = (audit.DEFAULT_PROTOCOL,),
    methods: Sequence[str] | None = None,
    trials: int = DEFAULT_TRIALS,
    shadows: int | None = None,
    quick: bool = False,
    tuning_seed: int = TUNING_SEED,
    space: dict[str, dict[str, list[Any]]] | None = None,
    ta_slack: float = TA_SLACK,
    backend: str = "auto",
    num_bootstrap: int = 200,
    progress: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Tunes every method on the audit and writes ``settings.json``, ``report.md`` and
    ``<protocol>/trials.jsonl`` to ``out``.

    Args:
      out: output directory (re-running with the same ``out`` resumes).
      protocols: installed protocols' names, paths of protocol config files, or records
        (:func:`scissorhands_jax.experiment.protocol.load_protocol`).
      methods: the methods to tune (default: every key of ``space``).
      trials: the budget, the same for every method.
      shadows: the population size K (even, at least 4; default 64, or 16 with ``quick``).
      quick: K = 16.
      tuning_seed: draws the tuning population and the trials; the audit refuses to
        report it with these settings.
      space: method -> hyperparameter -> values (default :data:`SEARCH_SPACE`).
      ta_slack: the feasibility rule's margin, in TA points below Retrain's.
      backend: the population backend (``"auto"``, ``"vmap"``, ``"sequential"``).
      num_bootstrap: bootstrap resamples behind each trial's row (the intervals are not
        used by the objective; fewer is faster).
      progress: progress bars.
      command: the command line, quoted in the report.

    Returns:
      The settings (the content of ``settings.json``).

    Raises:
      ValueError: an unknown or invalid protocol, an unknown method, a method without a
        space, a budget larger than a method's grid, bad ``shadows`` or ``ta_slack``, or
        an ``out`` holding a tune of other settings (all before any training).
    """
    space = {m: {k: list(v) for k, v in s.items()} for m, s in (space or SEARCH_SPACE).items()}
    resolved = audit.load_protocols(protocols)
    methods = list(methods or space)
    known = audit.method_names()
    bad = [m for m in methods if m not in known or m == audit.REFERENCE]
    if bad:
        tunable = sorted(set(known) - {audit.REFERENCE})
        raise ValueError(f"cannot tune {bad}; choose from {tunable} (Retrain is the reference).")
    missing = [m for m in methods if m not in space]
    if missing:
        raise ValueError(f"no search space for {missing}; add them to the space.")
    if not (isinstance(ta_slack, int | float) and math.isfinite(ta_slack) and ta_slack >= 0):
        raise ValueError(f"ta_slack must be a finite number >= 0, got {ta_slack!r}.")
    plans = {m: sample_trials(m, space[m], trials, tuning_seed) for m in methods}
    for m in methods:
        check_trials(m, plans[m], resolved[0])
    # the other methods' trials from earlier runs of this directory count when complete
    for m in space:
        if m not in plans and m in known and trials <= grid_size(space[m]):
            plans[m] = sample_trials(m, space[m], trials, tuning_seed)
    shadows = int(shadows or (audit.QUICK_SHADOWS if quick else audit.FULL_SHADOWS))
    if shadows < 4 or shadows % 2:
        raise ValueError(f"--shadows must be an even number of at least 4; got {shadows}.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory.")
    setting = {
        "protocols": {p.name: p.setting() for p in resolved},
        "shadows": shadows,
        "tuning_seed": int(tuning_seed),
        "space": space,
        "ta_slack": float(ta_slack),
        "backend": [backend, jax.default_backend()],
    }
    settings: dict[str, Any] = {
        "tuning_seed": int(tuning_seed),
        "shadows": shadows,
        "trials_per_method": trials,
        "objective": OBJECTIVE.format(slack=ta_slack),
        "ta_slack": float(ta_slack),
        "steps": "repair length in optimiser steps; epochs = round(steps / ceil(n / "
        "batch_size)), n the size of the set an epoch passes over",
        "protocols": {},
    }
    with run_directory(out, command=command):
        check_setting(
            out / "setting.json",
            setting,
            what="a tuning run",
            fix="pass a new --out, or the same --protocol/--shadows/--tuning-seed, to resume",
        )
        for protocol in resolved:
            settings["protocols"][protocol.name] = _tune_protocol(
                protocol, plans, methods, out, shadows=shadows, seed=int(tuning_seed),
                ta_slack=float(ta_slack), backend=backend, num_bootstrap=num_bootstrap,
                progress=progress,
            )  # fmt: skip
        tuned = {m for part in settings["protocols"].values() for m in part["methods"]}
        settings["space"] = {m: space[m] for m in space if m in tuned}
        write_bytes_atomic(out / "settings.json", json.dumps(settings, indent=2).encode())
        write_text_atomic(out / "report.md", markdown(settings, command))
    return settings


def _tune_protocol(
    protocol, plans, methods, out, *, shadows, seed, ta_slack, backend, num_bootstrap, progress
):
    """Runs the planned trials of ``methods`` on one protocol; its part of the settings,
    with every method whose planned trials are all written (by this run or earlier ones)."""
    model = audit.build_model(protocol)
    data = audit.make_population(protocol, shadows, seed)
    store = _audit_population.OutputStore(out / protocol.name)
    trials_path = out / protocol.name / "trials.jsonl"
    done = {_key(r["method"], r["params"]): r for r in _read_trials(trials_path)}
    todo = [(m, i, p) for m in methods for i, p in enumerate(plans[m]) if _key(m, p) not in done]
    roles = {audit.REFERENCE} if store.get(audit.REFERENCE) is None else set()
    if store.get(audit.ORIGINAL) is None or todo:
        roles.add(audit.ORIGINAL)  # the methods start from the originals' parameters
    trained = _audit_population.train_roles(
        model, protocol, data, store, roles, key=jax.random.key(seed), backend=backend,
        progress=progress,
    )  # fmt: skip
    retrain = store.get(audit.REFERENCE)
    references = {
        name: audit.method_row(
            protocol.name,
            name,
            store.get(name),
            retrain,
            data,
            seed=seed,
            num_bootstrap=num_bootstrap,
        )
        for name in (audit.ORIGINAL, audit.REFERENCE)
    }
    retrain_ta = references[audit.REFERENCE]["TA"]
    rows = list(done.values())
    reused = {"iu": ReusedInfluence()}
    for method, index, params in tqdm(todo, desc=protocol.name, disable=not progress):
        hps = concrete_hyperparameters(method, params, protocol, data)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            with _one_line_per_trial():
                outputs, seconds = _audit_population.unlearn_all(
                    method, hps, model, trained[audit.ORIGINAL], data, seed=seed,
                    progress=False, unlearn=reused.get(method),
                )  # fmt: skip
        except FloatingPointError as err:  # a diverging setting is a result, not a crash
            row = {"method": method, "index": index, "params": params, "hyperparameters": hps,
                   "error": str(err), "objective": float("inf"), "feasible": False,
                   "seconds": time.perf_counter() - start}  # fmt: skip
        else:
            row = _trial_row(method, index, params, hps, outputs, seconds, retrain, data,
                             protocol=protocol.name, seed=seed, retrain_ta=retrain_ta,
                             ta_slack=ta_slack, num_bootstrap=num_bootstrap)  # fmt: skip
        # the trial's whole cost (the method on every model, its outputs and its row);
        # CPU seconds stay meaningful on a machine shared with other jobs
        row["wall_s"] = time.perf_counter() - start
        row["cpu_s"] = time.process_time() - cpu
        logger.info(
            "%s %s trial %d: %s -> %s (%.1f s)", protocol.name, method, index + 1,
            ", ".join(f"{k}={v}" for k, v in params.items()),
            row.get("error") or f"U-LiRA {row['ulira_accuracy']:.3f}, TA {row['TA']:.1f}"
            + ("" if row["feasible"] else " (infeasible)"), row["wall_s"],
        )  # fmt: skip
        rows.append(row)
        _write_trials(trials_path, rows)
    chosen = {}
    for method, plan in plans.items():
        wanted = {_key(method, p) for p in plan}
        mine = [r for r in rows if _key(r["method"], r["params"]) in wanted]
        if len(mine) < len(plan):
            continue  # not tuned here (yet): its budget is not spent
        best = choose(mine)
        chosen[method] = {
            "hyperparameters": None if best is None else best["params"],
            "feasible": bool(best and best["feasible"]),
            "trials": len(mine),
            **{
                k: best.get(k)
                for k in ("index", "ulira_accuracy", "UA", "RA", "TA", "objective")
                if best
            },  # fmt: skip
        }
    return {
        "retrain_TA": retrain_ta,
        "references": {
            name: {k: r[k] for k in ("ulira_accuracy", "UA", "RA", "TA")}
            for name, r in references.items()
        },
        "methods": chosen,
    }


def markdown(settings: dict[str, Any], command: str | None = None) -> str:
    """The tune's report.md: the rules (budget, objective, seed, space) and the choices."""
    parts = ["# Tuning on the membership audit", ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    parts += [
        f"Budget: {settings['trials_per_method']} trials per method, drawn at random without "
        f"repeats from the space below. Tuning seed {settings['tuning_seed']} (never "
        f"reported), {settings['shadows']} models. Objective: {settings['objective']}. "
        f"Steps: {settings['steps']}.",
        "",
    ]
    for name, part in settings["protocols"].items():
        refs = part["references"]
        parts += [
            f"## {name}",
            "",
            f"References on the tuning seed: original U-LiRA "
            f"{refs[audit.ORIGINAL]['ulira_accuracy']:.3f}, Retrain "
            f"{refs[audit.REFERENCE]['ulira_accuracy']:.3f} (TA {part['retrain_TA']:.1f}).",
            "",
        ]
        body = []
        for method, c in part["methods"].items():
            if c["hyperparameters"] is None:
                body.append([method, "every trial failed", "–", "–", "–", "no", f"{c['trials']}"])
                continue
            body.append(
                [
                    method,
                    ", ".join(f"{k}={v}" for k, v in c["hyperparameters"].items()),
                    f"{c['ulira_accuracy']:.3f}",
                    f"{c['UA']:.1f}",
                    f"{c['TA']:.1f}",
                    "yes" if c["feasible"] else "NO (least violating)",
                    f"{c['trials']}",
                ]
            )
        columns = ["method", "chosen", "U-LiRA acc.", "UA", "TA", "feasible", "trials"]
        parts.append(report.markdown_table(columns, body))
        parts.append("")
    parts += ["## Search space", ""]
    for method, space in settings["space"].items():
        values = "; ".join(f"{k} ∈ {v}" for k, v in space.items())
        parts.append(f"- {method} ({grid_size(space)} settings): {values}")
    parts.append("")
    return "\n".join(parts)
