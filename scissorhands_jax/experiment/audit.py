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
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax import metrics as M
from scissorhands_jax import population as pop
from scissorhands_jax._training import sgd
from scissorhands_jax._versions import versions
from scissorhands_jax.experiment import _plots, report
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
from scissorhands_jax.experiment.report import NULL_LEVEL, SANITY_ORIGINAL_MIN, sanity
from scissorhands_jax.experiment.rules import SEED_LIMIT
from scissorhands_jax.experiment.rundir import (
    check_setting,
    read_state,
    run_directory,
    write_bytes_atomic,
)
from scissorhands_jax.parallel import on_mesh

REFERENCE, ORIGINAL = "retrain", "original"

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


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


class _Store:
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


def _train_roles(model, protocol, data, store, roles, *, key, backend, progress):
    """The ``roles`` asked for, stacked: originals (on each model's half) and retrains (on
    the half without F*)."""
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


def _unlearn_all(name, hps, model, originals, data, *, seed, progress, unlearn=None, mesh=None):
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


def _accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-model accuracy (percent) over the examples where ``mask`` (K, N) holds."""
    right = np.argmax(logits, axis=-1) == labels[None, :]
    return 100.0 * (right & mask).sum(1) / np.maximum(mask.sum(1), 1)


def _finite(values) -> list[float]:
    # an interpolated quantile between a finite and an infinite value is NaN: it is inf
    return [float(v) if not np.isnan(v) else float("inf") for v in values]


def _valid(scores: np.ndarray) -> np.ndarray:
    return scores[~np.isnan(scores)]


ATTACK = {"exclude_partner": True, "fixed_variance": False}
"""How the audit fits U-LiRA's Gaussians: without the target's complementary partner
and with per-example variances (see ``docs/metrics.md`` for the measurement)."""


def _ulira_null(phi_r: np.ndarray, data: Population, cand, *, seed, num_samples) -> dict:
    """The design's null from Retrain's outputs: pair roles flipped at random."""
    null = M.ulira_null(
        phi_r[:, cand],
        data.forgets[:, cand],
        data.unseen[:, cand],
        num_samples=num_samples,
        seed=seed,
        **ATTACK,
    )
    low, high, bound = np.quantile(null, [0.025, 0.975, NULL_LEVEL])
    return {
        "ulira_null_mean": float(null.mean()),
        "ulira_null_range": [float(low), float(high)],
        "ulira_null_bound": float(bound),
    }


def _candidate_intervals(attack, phi_u, phi_r, data, cand, eps, boot) -> dict[str, Any]:
    """Uncertainty of the candidate-level scores.

    U-LiRA's accuracy is a mean of decisions, one per (model, candidate): its interval
    resamples model pairs and candidates at once, and the leave-one-pair-out jackknife
    refits the attack without each pair. ε is estimated from the models' outputs
    themselves (a threshold scan over each candidate's sample), and a resample of models
    with replacement would feed it tied duplicates: its intervals stay over candidates,
    with a leave-one-pair-out jackknife of the forget quality for the models' share.
    """
    s_u, s_r = attack["scores_unlearned"][:, cand], attack["scores_retrained"][:, cand]
    forgot, unseen = data.forgets[:, cand], data.unseen[:, cand]
    phi_u, phi_r = phi_u[:, cand], phi_r[:, cand]
    pairs = data.members.shape[0] // 2

    def accuracy(groups, columns):  # decisions of the resampled models on resampled candidates
        rows = M.pair_rows(groups)[:, None]
        return M.balanced_accuracy(_valid(s_u[rows, columns]), _valid(s_r[rows, columns]))

    def refitted(groups):  # the whole attack again, without the left-out pair
        rows = M.pair_rows(groups)
        return M.ulira(phi_u[rows], forgot[rows], phi_r[rows], unseen[rows], **ATTACK)["accuracy"]

    u_obs, r_obs = np.where(forgot, phi_u, np.nan), np.where(unseen, phi_r, np.nan)

    def quality_without(groups):
        rows = M.pair_rows(groups)
        return M.forget_quality(M.challenge_epsilon(u_obs[rows], r_obs[rows]))

    def candidates_only(su, sr):  # examples along axis 0
        return M.balanced_accuracy(_valid(su), _valid(sr))

    def jackknife(statistic):  # two pairs left leave no model to fit without the target's
        return M.jackknife_se(statistic, pairs) if pairs >= 3 else None

    with np.errstate(invalid="ignore"):  # quantiles of infinite values: inf - inf
        eps_ci = M.bootstrap_ci(eps, np.median, **boot)[1:]
    return {
        "ulira_accuracy_ci": list(M.two_way_bootstrap_ci(accuracy, pairs, cand.size, **boot)[1:]),
        "ulira_accuracy_se": jackknife(refitted),
        "ulira_accuracy_ci_candidates": list(
            M.bootstrap_ci((s_u.T, s_r.T), candidates_only, **boot)[1:]
        ),
        "epsilon_ci": _finite(eps_ci),
        "forget_quality_ci": list(M.bootstrap_ci(eps, M.forget_quality, **boot)[1:]),
        "forget_quality_se": jackknife(quality_without),
    }


def _mean_confidence(logits, labels, mask=None) -> float:
    phi = M.logit_confidence(logits, labels[None, :])
    return float(phi.mean() if mask is None else phi[mask].mean())


def method_row(
    protocol: str,
    method: str,
    outputs: dict[str, np.ndarray],
    retrain: dict[str, np.ndarray],
    data: Population,
    *,
    seed: int = 0,
    num_bootstrap: int = 1000,
) -> dict[str, Any]:
    """One ``audit.json`` row from a method's and Retrain's stacked outputs.

    U-LiRA and the ε-based forgetting quality use the candidate examples: the method's
    outputs where model k forgot x, against Retrain's where model k never saw x. U-LiRA's
    Gaussians leave out the target model and its complementary partner (:data:`ATTACK`).
    ε comes from threshold attacks in both directions (a method that makes forget examples
    *less* confident than Retrain does is caught too); ``forget_quality_one_sided`` uses
    the competition's one-directional attacks only. ``epsilon`` is the median of the
    per-example ε (with few models an attack often separates the two samples completely,
    and that example's ε is infinite, so the mean would say nothing). Forget quality and
    the challenge score saturate below 1 with the number of models (Retrain scored
    against itself stays far from 1), so ``forget_quality_rel`` and
    ``challenge_score_rel`` divide them by Retrain's own at the same K. UA, RA and TA are
    means over the K models of 100 − accuracy on each model's forget set, accuracy on
    its retain set and on the test set.

    Intervals (``*_ci``) are 95 % percentile bootstraps: over model pairs and candidates
    at once for U-LiRA (``ulira_accuracy_ci_candidates``: candidates only, models
    fixed), over candidates for ε and the forget quality, over models for accuracy;
    ``ulira_accuracy_se`` and ``forget_quality_se`` are leave-one-pair-out jackknife
    standard errors (None with fewer than three pairs). ``confidence_test`` and
    ``confidence_forget`` are the mean logit-confidence (``metrics.logit_confidence``) on
    the test set and on each model's forget set, ``*_shift`` the same minus Retrain's:
    a model that is under-confident everywhere moves the attack as much as one that
    forgot too much, and only the test shift tells them apart. Retrain's row adds the
    pair-flip null of the attack (``ulira_null_*``, see :func:`sanity`).
    """
    labels = data.pool["label"]
    cand = np.flatnonzero(data.candidates)
    phi_u = M.logit_confidence(outputs["pool"], labels[None, :])
    phi_r = M.logit_confidence(retrain["pool"], labels[None, :])
    attack = M.ulira(phi_u, data.forgets, phi_r, data.unseen, **ATTACK)
    unlearned_obs = np.where(data.forgets, phi_u, np.nan)[:, cand]
    retrained_obs = np.where(data.unseen, phi_r, np.nan)[:, cand]
    eps = M.challenge_epsilon(unlearned_obs, retrained_obs)
    # The competition's own attacks threshold in one direction only; they miss a method
    # that overshoots (forget examples less confident than under Retrain), which then
    # scores better than Retrain itself. Reported beside, not instead.
    eps_one_sided = M.challenge_epsilon(unlearned_obs, retrained_obs, two_sided=False)
    forgot_by_retrain = np.where(data.forgets, phi_r, np.nan)[:, cand]
    quality_ref = M.forget_quality(M.challenge_epsilon(forgot_by_retrain, retrained_obs))
    ua = 100.0 - _accuracy(outputs["pool"], labels, data.forgets)
    ra = _accuracy(outputs["pool"], labels, data.retains)
    everything = np.ones(outputs["test"].shape[:2], bool)
    ta = _accuracy(outputs["test"], data.test["label"], everything)
    ra_ref = _accuracy(retrain["pool"], labels, data.retains).mean()
    ta_ref = _accuracy(retrain["test"], data.test["label"], everything).mean()
    quality = M.forget_quality(eps)
    score = M.challenge_score(quality, ra.mean(), ra_ref, ta.mean(), ta_ref)
    boot = {"seed": seed, "num_samples": num_bootstrap}
    row = {
        "protocol": protocol,
        "method": method,
        "n_models": int(data.members.shape[0]),
        "n_candidates": int(cand.size),
        "ulira_accuracy": float(attack["accuracy"]),
        "ulira_auc": float(attack["auc"]),
        "epsilon": float(np.median(eps)),
        "forget_quality": float(quality),
        "forget_quality_rel": float(quality / quality_ref),
        "forget_quality_one_sided": M.forget_quality(eps_one_sided),
        "challenge_score": score,
        "challenge_score_rel": float(score / quality_ref),  # Retrain's score is its quality
        **_candidate_intervals(attack, phi_u, phi_r, data, cand, eps, boot),
    }
    for name, values in (("UA", ua), ("RA", ra), ("TA", ta)):
        row[name] = float(values.mean())
        row[f"{name}_ci"] = list(M.bootstrap_ci(values, **boot)[1:])
    confidence = {
        "test": [_mean_confidence(o["test"], data.test["label"]) for o in (outputs, retrain)],
        "forget": [_mean_confidence(o["pool"], labels, data.forgets) for o in (outputs, retrain)],
    }
    for part, (mine, ref) in confidence.items():
        row[f"confidence_{part}"], row[f"confidence_{part}_shift"] = mine, mine - ref
    if method == REFERENCE:
        row.update(_ulira_null(phi_r, data, cand, seed=seed, num_samples=num_bootstrap))
    return row


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
            store = _Store(out / protocol.name)
            missing = [m for m in methods if store.get(m) is None]
            # every method but Retrain starts from the originals; Retrain only from its own
            roles = {ORIGINAL for m in missing if m != REFERENCE} | ({REFERENCE} & set(missing))
            if roles:
                trained = _train_roles(
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
                    result, seconds = _unlearn_all(
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
