"""The membership audit: can an attacker tell an unlearned model from a retrained one?

The SVC MIA of the comparison tables asks one attack, trained on one model, about the
forget set. Where members and non-members look alike (the digits models generalise
almost perfectly) that attack learns nothing and its verdict is noise. The audit asks a
stronger question over a *population* of models, as the current literature does:

- **U-LiRA** (Hayes, Shumailov, Triantafillou, Khalifa & Papernot, "Inexact Unlearning
  Needs More Careful Evaluations to Avoid a False Sense of Privacy", 2024): K models are
  trained on random halves of a data pool; each forgets the part of a fixed candidate
  set F* that it trained on, with the method under test, and a Retrain is trained
  without F*. For every candidate example, the logit-scaled confidences of the other
  models give two Gaussians, "trained on it, then unlearned" and "never trained on it";
  a likelihood-ratio test then labels each held-out model's output. The attack's
  balanced accuracy is the score: 0.5 means it cannot tell, which is perfect unlearning.
- **Forgetting quality** of the NeurIPS 2023 unlearning challenge (Triantafillou et al.,
  "Are we making progress in unlearning?", 2024): per candidate example, an ε estimated
  from the error rates of threshold attacks between the two families of outputs, binned
  into a per-example score; averaged, and multiplied by the relative retain and test
  accuracy for the challenge's final score.

Sanity is built in: the untouched original ("unlearning" that does nothing) must be
detectable and Retrain must not be. A protocol on which the original is not detectable
cannot audit anything; the report says so.

Protocols are config files (:mod:`scissorhands_jax.experiment.protocol`) built from the
embedded digits, so the audit runs offline. ``digits10`` is the comparison's protocol (its
models barely memorise); ``digits_small`` trains wider, unregularised models on fewer
examples, so that membership is measurable; ``digits_cnn_small`` does the same with the
digits CNN, whose layer-restricted trim (all but the first convolution) is the paper's
setting. This module is the runner behind ``scissorhands audit``; it takes keyword
arguments only.

The population's training and unlearning, with the outputs they keep, are in
:mod:`~scissorhands_jax.experiment._audit_population`; the scores of one row in
:mod:`~scissorhands_jax.experiment._audit_stats`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scissorhands_jax._versions import versions
from scissorhands_jax.experiment import _audit_population, _plots, report
from scissorhands_jax.experiment._audit_stats import ATTACK, method_row
from scissorhands_jax.experiment._tune_rules import (
    concrete_hyperparameters,
    load_settings,
    tuned_hyperparameters,
)
from scissorhands_jax.experiment.protocol import (
    DEFAULT_PROTOCOL,
    Population,
    Protocol,
    base_method,
    build_model,
    load_protocol,
    load_protocols,
    make_population,
    method_hyperparameters,
    method_names,
    protocol_names,
)
from scissorhands_jax.experiment.report import (
    NULL_LEVEL,
    ORIGINAL,
    REFERENCE,
    SANITY_ORIGINAL_MIN,
    sanity,
)
from scissorhands_jax.experiment.rules import SEED_LIMIT
from scissorhands_jax.experiment.rundir import (
    check_setting,
    read_state,
    run_directory,
    write_bytes_atomic,
)

__all__ = [
    "ATTACK",
    "DEFAULT_PROTOCOL",
    "FULL_SHADOWS",
    "NULL_LEVEL",
    "ORIGINAL",
    "QUICK_METHODS",
    "QUICK_SHADOWS",
    "REFERENCE",
    "SANITY_ORIGINAL_MIN",
    "Population",
    "Protocol",
    "base_method",
    "build_model",
    "load_protocol",
    "load_protocols",
    "make_population",
    "method_hyperparameters",
    "method_names",
    "method_row",
    "run_audit",
    "sanity",
]


QUICK_SHADOWS, FULL_SHADOWS = 16, 64
QUICK_METHODS = (ORIGINAL, REFERENCE, "scissorhands", "ft", "ga", "rl", "salun")
"""``--quick``: 16 models and the cheaper methods (minutes on a 2-core CPU)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=False).encode()


def _check_setting(out: Path, setting: dict[str, Any]) -> None:
    check_setting(
        out / "setting.json",
        setting,
        what="an audit",
        fix="pass a new --out, or the same --protocol/--shadows/--seed/--settings, to resume",
        optional=("tuned",),
    )


def run_audit(
    *,
    out: str | Path,
    protocols: Sequence[str | Protocol] = (DEFAULT_PROTOCOL,),
    methods: Sequence[str] | None = None,
    shadows: int | None = None,
    quick: bool = False,
    seed: int = 0,
    backend: str = "auto",
    num_bootstrap: int = 1000,
    plot: bool = True,
    progress: bool = False,
    command: str | None = None,
    settings: str | Path | dict[str, Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> list[dict[str, Any]]:
    """Audits every method on every protocol and writes ``audit.json``, ``report.md`` and
    ``report.png`` to ``out``.

    Per protocol: K models are trained at once
    (:func:`scissorhands_jax.population.train_population`) on random halves of the pool,
    K retrains on the same halves without the candidate forget set, then each method
    unlearns each model's forget request. Outputs are cached in ``out/<protocol>/outputs``
    with digests, so a rerun with the same settings resumes and only adds what is missing.

    Args:
      out: output directory.
      protocols: installed protocols' names (``"digits_small"``; see
        :func:`~scissorhands_jax.experiment.protocol.protocol_names`), paths of protocol
        config files, or :class:`Protocol` records.
      methods: ``"original"``, ``"retrain"`` and names of
        :data:`scissorhands_jax.baselines.METHODS` (default: all of them; with ``quick``
        :data:`QUICK_METHODS`). The original and Retrain are always audited (sanity).
      shadows: the population size K (even, at least 4; default 64, or 16 with ``quick``).
      quick: the small audit (16 models, the cheaper methods).
      seed: draws the candidate set, the halves and every key; in ``[0, 2**31)``.
      backend: the population backend (``"auto"``, ``"vmap"``, ``"sequential"``).
      num_bootstrap: bootstrap resamples for the intervals.
      plot: write ``report.png`` (needs matplotlib).
      progress: progress bars.
      command: the command line, quoted in the report.
      settings: a ``scissorhands tune`` result (the path of its ``settings.json``, or
        its content): the methods it chose hyperparameters for on a protocol run with
        them (:func:`scissorhands_jax.experiment.tune.concrete_hyperparameters`); the others
        keep the protocol's (:func:`method_hyperparameters`). Each row's ``tuning`` says
        which, with the budget and the search space.
      mesh: run the methods data-parallel on this mesh (each model placed on it before
        its method runs; the populations are vectorised with ``vmap`` instead); None:
        one device.

    Returns:
      The rows of ``audit.json``: one per protocol and method.

    Raises:
      ValueError: an unknown or invalid protocol (or two of one name), an unknown
        method, bad ``shadows`` or ``seed``, unreadable ``settings`` or ``seed`` equal to
        their tuning seed, or an ``out`` holding another audit, something else, a
        damaged state file, or in use by another process (all before any training).
    """
    resolved = load_protocols(protocols)
    # what each protocol is for, in the report (also of rows kept from earlier runs)
    whys = {p.name: p.why for p in map(load_protocol, protocol_names())}
    whys.update((p.name, p.why) for p in resolved)
    known = method_names()
    methods = list(methods or (QUICK_METHODS if quick else (ORIGINAL, *known)))
    bad = [m for m in methods if m != ORIGINAL and m not in known]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {[ORIGINAL, *sorted(known)]}.")
    methods = [m for m in (ORIGINAL, REFERENCE) if m not in methods] + methods  # sanity rows
    if shadows is None:
        shadows = QUICK_SHADOWS if quick else FULL_SHADOWS
    if not _is_int(shadows) or shadows < 4 or shadows % 2:
        raise ValueError(f"--shadows must be an even number of at least 4; got {shadows!r}.")
    if not _is_int(seed) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"--seed must be an integer in [0, 2**31); got {seed!r}.")
    if plot:
        _plots.check_plotting()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory.")
    populations = {p.name: make_population(p, shadows, seed) for p in resolved}
    hyperparameters, tuning = _audit_hyperparameters(resolved, methods, populations, settings, seed)
    setting = {
        "protocols": {p.name: p.setting() for p in resolved},
        "shadows": shadows,
        "seed": int(seed),
        "backend": [backend, jax.default_backend()],
    }
    run_versions = versions()
    if settings is not None:  # cached outputs of default runs must not pass for tuned ones
        setting["tuned"] = {
            p: {m: t.get("params") for m, t in by.items()} for p, by in tuning.items()
        }
    with run_directory(out, command=command):  # one writer at a time
        _check_setting(out, setting)
        results_path = out / "audit.json"
        rows: list[dict[str, Any]] = read_state(
            results_path,
            [],
            kind=list,
            fix="delete it (its rows are made again from the saved outputs), or choose "
            "another --out",
        )
        for protocol in resolved:
            model = build_model(protocol)
            data = populations[protocol.name]
            store = _audit_population.OutputStore(out / protocol.name)
            missing = [m for m in methods if store.get(m) is None]
            # every method but Retrain starts from the originals; Retrain only from its own
            roles = {ORIGINAL for m in missing if m != REFERENCE} | ({REFERENCE} & set(missing))
            if roles:
                trained = _audit_population.train_roles(
                    model,
                    protocol,
                    data,
                    store,
                    roles,
                    key=jax.random.key(seed),
                    backend=backend,
                    progress=progress,
                )
            retrain = store.get(REFERENCE)
            for method in methods:
                outputs = store.get(method)
                if outputs is None:
                    result, seconds = _audit_population.unlearn_all(
                        method,
                        hyperparameters[protocol.name][method],
                        model,
                        trained[ORIGINAL],
                        data,
                        seed=seed,
                        progress=progress,
                        mesh=mesh,
                    )
                    store.put(method, result, seconds)
                    outputs = store.get(method)
                row = method_row(
                    protocol.name,
                    method,
                    outputs,
                    retrain,
                    data,
                    seed=seed,
                    num_bootstrap=num_bootstrap,
                )
                row["rte_s"] = float(np.mean(outputs["seconds"]))
                row["hyperparameters"] = hyperparameters[protocol.name].get(method)
                row["versions"] = run_versions
                row["tuning"] = tuning[protocol.name].get(method)
                key = (protocol.name, method)
                rows = [r for r in rows if (r["protocol"], r["method"]) != key] + [row]
                write_bytes_atomic(results_path, _json_bytes(rows))
        report.write_audit_report(rows, out, whys=whys, plot=plot, command=command)
        return rows


def _audit_hyperparameters(resolved, methods, populations, settings, seed):
    """Per protocol, the hyperparameters of each method and where they come from: a
    tune's ``settings`` where it chose some, else :func:`method_hyperparameters`."""
    if settings is not None:
        settings = load_settings(settings)
        if int(seed) == int(settings["tuning_seed"]):
            raise ValueError(
                f"--seed {seed} is the tuning seed of these --settings: a seed the "
                "hyperparameters were chosen on is never reported; pass another --seed."
            )
    hyperparameters, tuning = {}, {}
    for p in resolved:
        tuned = tuned_hyperparameters(settings, p.name) if settings else {}
        hyperparameters[p.name], tuning[p.name] = {}, {}
        for m in methods:
            if m in (ORIGINAL, REFERENCE):
                continue
            if m in tuned:
                data = populations[p.name]
                hyperparameters[p.name][m] = concrete_hyperparameters(m, tuned[m], p, data)
                tuning[p.name][m] = {
                    "source": "tuned",
                    "params": tuned[m],
                    "trials_per_method": settings["trials_per_method"],
                    "space": settings["space"].get(m),
                    "objective": settings["objective"],
                    "tuning_seed": settings["tuning_seed"],
                    "shadows": settings.get("shadows"),
                }
            else:
                hyperparameters[p.name][m] = method_hyperparameters(m, p)
                tuning[p.name][m] = {"source": "default"}
    return hyperparameters, tuning
