"""Tuning on the membership audit: every method, the same budget, a declared space.

A ranking of unlearning methods is only as fair as the tuning behind it: a method given
more trials, or a wider grid, can look better for that reason alone. This module tunes
every method of :data:`scissorhands_jax.baselines.METHODS` (Retrain and the untouched
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
import itertools
import json
import logging
import math
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax import audit
from scissorhands_jax._rundir import run_directory, write_bytes_atomic, write_text_atomic

logger = logging.getLogger(__name__)

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
    # Opt-in variants (an output temperature calibration, further projection schedules)
    # join here as further keys once the method offers them.
}

SEARCH_SPACE: dict[str, dict[str, list[Any]]] = {
    "scissorhands": SCISSORHANDS_SPACE,
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
Hyperparameters not named keep the audit's defaults
(:func:`scissorhands_jax.audit.method_hyperparameters`)."""

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
    method: str, chosen: dict[str, Any], protocol: audit.Protocol, data: audit.Population
) -> dict[str, Any]:
    """What ``method`` runs with on ``data``: the audit's defaults, overridden by
    ``chosen``, with ``steps`` turned into epochs at this population's set sizes."""
    hps = {**audit.method_hyperparameters(method, protocol), **chosen}
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


def check_trials(method: str, trials: Sequence[dict[str, Any]], protocol: audit.Protocol) -> None:
    """Raises ValueError, naming the method and the setting, for a trial that the method
    would refuse (an unknown hyperparameter, a bad value), before any work."""
    from scissorhands_jax.baselines import HYPERPARAMETERS
    from scissorhands_jax.method import check_settings

    for params in trials:
        hps = {**audit.method_hyperparameters(method, protocol), **params}
        if "steps" in hps:
            epochs_for(method, hps.pop("steps"), 1, 1, 1)  # a method with epochs, steps >= 1
            hps["epochs"] = 1
        try:
            if method == "scissorhands":
                check_settings(**hps)
            else:
                HYPERPARAMETERS[method].of(method, hps)
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


@contextlib.contextmanager
def _one_line_per_trial():
    """Holds back the methods' per-epoch log lines (thousands over a tune) while a trial
    runs; the trial's own line replaces them."""
    epochs = logging.getLogger("scissorhands_jax.loop")
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
        from scissorhands_jax.baselines import influence as iu

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
    protocols: Sequence[str | audit.Protocol] = (audit.DEFAULT_PROTOCOL,),
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
      protocols: names in :data:`scissorhands_jax.audit.PROTOCOLS`, or records.
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
      ValueError: an unknown protocol or method, a method without a space, a budget
        larger than a method's grid, bad ``shadows`` or ``ta_slack``, or an ``out``
        holding a tune of other settings (all before any training).
    """
    from scissorhands_jax.baselines import METHODS

    space = {m: {k: list(v) for k, v in s.items()} for m, s in (space or SEARCH_SPACE).items()}
    unknown = [p for p in protocols if isinstance(p, str) and p not in audit.PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {sorted(audit.PROTOCOLS)}.")
    resolved = [audit.PROTOCOLS[p] if isinstance(p, str) else p for p in protocols]
    methods = list(methods or space)
    bad = [m for m in methods if m not in METHODS or m == audit.REFERENCE]
    if bad:
        tunable = sorted(set(METHODS) - {audit.REFERENCE})
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
        if m not in plans and m in METHODS and trials <= grid_size(space[m]):
            plans[m] = sample_trials(m, space[m], trials, tuning_seed)
    shadows = int(shadows or (audit.QUICK_SHADOWS if quick else audit.FULL_SHADOWS))
    if shadows < 4 or shadows % 2:
        raise ValueError(f"--shadows must be an even number of at least 4; got {shadows}.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory.")
    setting = {
        "protocols": {p.name: dataclasses.asdict(p) for p in resolved},
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
        audit._check_setting(out, setting)
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
    store = audit._Store(out / protocol.name)
    trials_path = out / protocol.name / "trials.jsonl"
    done = {_key(r["method"], r["params"]): r for r in _read_trials(trials_path)}
    todo = [(m, i, p) for m in methods for i, p in enumerate(plans[m]) if _key(m, p) not in done]
    roles = {audit.REFERENCE} if store.get(audit.REFERENCE) is None else set()
    if store.get(audit.ORIGINAL) is None or todo:
        roles.add(audit.ORIGINAL)  # the methods start from the originals' parameters
    trained = audit._train_roles(
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
        )  # fmt: skip
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
                outputs, seconds = audit._unlearn_all(
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
            "| method | chosen | U-LiRA acc. | UA | TA | feasible | trials |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, c in part["methods"].items():
            if c["hyperparameters"] is None:
                parts.append(f"| {method} | every trial failed | – | – | – | no | {c['trials']} |")
                continue
            hp = ", ".join(f"{k}={v}" for k, v in c["hyperparameters"].items())
            parts.append(
                f"| {method} | {hp} | {c['ulira_accuracy']:.3f} | {c['UA']:.1f} | "
                f"{c['TA']:.1f} | {'yes' if c['feasible'] else 'NO (least violating)'} | "
                f"{c['trials']} |"
            )
        parts.append("")
    parts += ["## Search space", ""]
    for method, space in settings["space"].items():
        values = "; ".join(f"{k} ∈ {v}" for k, v in space.items())
        parts.append(f"- {method} ({grid_size(space)} settings): {values}")
    parts.append("")
    return "\n".join(parts)


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
