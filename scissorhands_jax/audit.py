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

Protocols (:data:`PROTOCOLS`) are built from the embedded digits, so the audit runs
offline. ``digits10`` is the comparison's protocol (its models barely memorise);
``digits_small`` trains wider, unregularised models on fewer examples, so that
membership is measurable; ``digits_cnn_small`` does the same with the digits CNN, whose
layer-restricted trim (all but the first convolution) is the paper's setting. This
module is the runner behind ``scissorhands audit``; it takes keyword arguments only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax import metrics as M
from scissorhands_jax import population as pop
from scissorhands_jax._rundir import run_directory, write_bytes_atomic
from scissorhands_jax.data import load_digits10
from scissorhands_jax.models import DigitsCNN, linen_model
from scissorhands_jax.training import sgd

REFERENCE, ORIGINAL = "retrain", "original"
SANITY_ORIGINAL_MIN, SANITY_RETRAIN_MAX = 0.60, 0.55
"""The audit is valid on a protocol when the original's U-LiRA accuracy is at least
``SANITY_ORIGINAL_MIN`` (membership is detectable) and Retrain's at most
``SANITY_RETRAIN_MAX`` (the attack does not see ghosts)."""


class DigitsMLP(nn.Module):
    """Two hidden ReLU layers of ``width`` units on the flattened 8x8 digit."""

    width: int = 512
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.width, name="hidden1")(x))
        x = nn.relu(nn.Dense(self.width, name="hidden2")(x))
        return nn.Dense(self.num_classes, name="head")(x)


@dataclass(frozen=True)
class Protocol:
    """One audit setting on the embedded digits.

    Attributes:
      name: the protocol's name.
      pool_size: how many digits-10 training examples (in their stored order) form the
        pool; each model trains on a random half of it.
      candidates: size of the candidate forget set F* (drawn from the pool); each model
        forgets the half of F* that it trained on.
      model: ``"digits_cnn"`` or ``"digits_mlp"``.
      epochs, lr, weight_decay, batch_size: the SGD schedule (momentum 0.9) of the
        originals and the retrains.
      why: one line on what the protocol is for.
    """

    name: str
    pool_size: int
    candidates: int
    model: str
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    why: str


PROTOCOLS: dict[str, Protocol] = {
    "digits10": Protocol(
        name="digits10",
        pool_size=1437,
        candidates=286,
        model="digits_cnn",
        epochs=30,
        lr=0.05,
        weight_decay=5e-4,
        batch_size=64,
        why="the comparison's protocol: the digits CNN on halves of the 1,437 training "
        "digits; its models generalise so well that membership is barely measurable",
    ),
    "digits_small": Protocol(
        name="digits_small",
        pool_size=400,
        candidates=80,
        model="digits_mlp",
        epochs=80,
        lr=0.05,
        weight_decay=0.0,
        batch_size=64,
        why="membership made measurable: a wide MLP (two hidden layers of 512) without "
        "weight decay on halves of 400 digits memorises its 200 training examples; each "
        "model forgets 40 of them (20 %)",
    ),
    "digits_cnn_small": Protocol(
        name="digits_cnn_small",
        pool_size=200,
        candidates=40,
        model="digits_cnn",
        epochs=120,
        lr=0.05,
        weight_decay=0.0,
        batch_size=32,
        why="membership measurable on a convolutional model: the digits CNN without weight "
        "decay on halves of 200 digits memorises its 100 training examples; each model "
        "forgets 20 of them (20 %), and Scissorhands re-initialises all but the first conv",
    ),
}
DEFAULT_PROTOCOL = "digits_small"


def build_model(protocol: Protocol):
    """The protocol's :class:`~scissorhands_jax.models.Model` record."""
    example = jnp.zeros((1, 8, 8, 1), jnp.float32)
    if protocol.model == "digits_cnn":
        return linen_model(DigitsCNN(), example)
    if protocol.model == "digits_mlp":
        return linen_model(DigitsMLP(), example, train_kwarg=None)
    raise ValueError(f"unknown audit model {protocol.model!r}; use digits_cnn or digits_mlp.")


@dataclass(frozen=True)
class Population:
    """The data of one audit: pool, test set and who trained on / forgets what.

    Attributes:
      pool: ``{"image", "label"}`` arrays of the N pool examples.
      test: the test set (never trained on).
      candidates: bool (N,), the candidate forget set F*.
      members: bool (K, N), model k's training set.
    """

    pool: dict
    test: dict
    candidates: np.ndarray
    members: np.ndarray

    @property
    def forgets(self) -> np.ndarray:
        """bool (K, N): model k's forget request, the candidates it trained on."""
        return self.members & self.candidates

    @property
    def retains(self) -> np.ndarray:
        """bool (K, N): model k's retain set, its members outside F*."""
        return self.members & ~self.candidates

    @property
    def unseen(self) -> np.ndarray:
        """bool (K, N): candidates model k never trained on."""
        return ~self.members & self.candidates


def make_population(protocol: Protocol, num_models: int, seed: int) -> Population:
    """Draws F* and the K training halves (half of F* and half of the rest per model).

    Raises:
      ValueError: ``num_models`` below 4 or odd (models come in complementary pairs).
    """
    if num_models < 4 or num_models % 2:
        raise ValueError(
            f"--shadows must be an even number of at least 4 (models come in complementary "
            f"pairs and each target needs others to compare with); got {num_models}."
        )
    split = load_digits10("random10", 0)
    pool = {k: v[: protocol.pool_size] for k, v in split.train.items()}
    n = protocol.pool_size
    rng = np.random.default_rng(seed)
    candidates = np.zeros(n, bool)
    candidates[rng.choice(n, protocol.candidates, replace=False)] = True
    members = pop.membership_matrix(seed, num_models, n, strata=candidates.astype(np.int64))
    return Population(pool, split.test, candidates, members)


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
        self.index = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}

    def get(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.dir / f"{name}.npz"
        entry = self.index.get(name)
        if entry is None or not path.exists():
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


def _unlearn_all(name, hps, model, originals, data, *, seed, progress):
    """Runs method ``name`` on every model of the population; stacked outputs, seconds."""
    from scissorhands_jax.baselines import METHODS

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
        retain = {n: v[data.retains[k]] for n, v in data.pool.items()}
        forget = {n: v[data.forgets[k]] for n, v in data.pool.items()}
        start = time.perf_counter()
        result = METHODS[name](
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


def _finite_ci(values: np.ndarray, statistic, boot: dict) -> list[float]:
    """A bootstrap interval of a statistic that may be infinite (ε of separated samples)."""
    with np.errstate(invalid="ignore"):  # quantiles of infinite values: inf - inf
        low, high = M.bootstrap_ci(values, statistic, **boot)[1:]
    # an interpolated quantile between a finite and an infinite value is NaN: it is inf
    return [float(v) if not np.isnan(v) else float("inf") for v in (low, high)]


def _valid(scores: np.ndarray) -> np.ndarray:
    return scores[~np.isnan(scores)]


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
    outputs where model k forgot x, against Retrain's where model k never saw x.
    ε comes from threshold attacks in both directions (a method that makes forget examples
    *less* confident than Retrain does is caught too); ``forget_quality_one_sided`` uses
    the competition's one-directional attacks only. ``epsilon`` is the median of the
    per-example ε (with few models an attack often
    separates the two samples completely, and that example's ε is infinite, so the mean
    would say nothing). UA, RA
    and TA are means over the K models of 100 − accuracy on each model's forget set,
    accuracy on its retain set and on the test set. Intervals (``*_ci``) are 95 %
    percentile bootstraps: over candidate examples for the attack scores, over models
    for accuracy.
    """
    labels = data.pool["label"]
    cand = np.flatnonzero(data.candidates)
    phi_u = M.logit_confidence(outputs["pool"], labels[None, :])
    phi_r = M.logit_confidence(retrain["pool"], labels[None, :])
    attack = M.ulira(phi_u, data.forgets, phi_r, data.unseen)
    unlearned_obs = np.where(data.forgets, phi_u, np.nan)[:, cand]
    retrained_obs = np.where(data.unseen, phi_r, np.nan)[:, cand]
    eps = M.challenge_epsilon(unlearned_obs, retrained_obs)
    # The competition's own attacks threshold in one direction only; they miss a method
    # that overshoots (forget examples less confident than under Retrain), which then
    # scores better than Retrain itself. Reported beside, not instead.
    eps_one_sided = M.challenge_epsilon(unlearned_obs, retrained_obs, two_sided=False)
    ua = 100.0 - _accuracy(outputs["pool"], labels, data.forgets)
    ra = _accuracy(outputs["pool"], labels, data.retains)
    everything = np.ones(outputs["test"].shape[:2], bool)
    ta = _accuracy(outputs["test"], data.test["label"], everything)
    ra_ref = _accuracy(retrain["pool"], labels, data.retains).mean()
    ta_ref = _accuracy(retrain["test"], data.test["label"], everything).mean()
    quality = M.forget_quality(eps)
    boot = {"seed": seed, "num_samples": num_bootstrap}

    def attack_accuracy(su, sr):  # examples along axis 0
        return M.balanced_accuracy(_valid(su), _valid(sr))

    per_example = (attack["scores_unlearned"][:, cand].T, attack["scores_retrained"][:, cand].T)
    row = {
        "protocol": protocol,
        "method": method,
        "n_models": int(data.members.shape[0]),
        "n_candidates": int(cand.size),
        "ulira_accuracy": float(attack["accuracy"]),
        "ulira_accuracy_ci": list(M.bootstrap_ci(per_example, attack_accuracy, **boot)[1:]),
        "ulira_auc": float(attack["auc"]),
        "epsilon": float(np.median(eps)),
        "epsilon_ci": _finite_ci(eps, np.median, boot),
        "forget_quality": float(quality),
        "forget_quality_ci": list(M.bootstrap_ci(eps, M.forget_quality, **boot)[1:]),
        "forget_quality_one_sided": M.forget_quality(eps_one_sided),
        "challenge_score": M.challenge_score(quality, ra.mean(), ra_ref, ta.mean(), ta_ref),
    }
    for name, values in (("UA", ua), ("RA", ra), ("TA", ta)):
        row[name] = float(values.mean())
        row[f"{name}_ci"] = list(M.bootstrap_ci(values, **boot)[1:])
    return row


QUICK_SHADOWS, FULL_SHADOWS = 16, 64
QUICK_METHODS = (ORIGINAL, REFERENCE, "scissorhands", "ft", "ga", "rl", "salun")
"""``--quick``: 16 models and the cheaper methods (minutes on a 2-core CPU)."""


def method_hyperparameters(name: str, protocol: Protocol) -> dict[str, Any]:
    """The hyperparameters method ``name`` runs with in the audit: those of the digits
    comparison (:data:`scissorhands_jax.compare.DIGITS_HYPERPARAMETERS`), with
    Scissorhands' eligible set adapted to the protocol's model (all but the first layer)."""
    from scissorhands_jax.compare import DIGITS_HYPERPARAMETERS

    hps = dict(DIGITS_HYPERPARAMETERS[name])
    if name == "scissorhands" and protocol.model == "digits_mlp":
        hps["eligible"] = r"^(?!hidden1/)"
    return hps


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=False).encode()


def _check_setting(out: Path, setting: dict[str, Any]) -> None:
    path = out / "setting.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != json.loads(json.dumps(setting)):
            diff = sorted(k for k in setting if stored.get(k) != json.loads(json.dumps(setting[k])))
            raise ValueError(
                f"{out} holds an audit with other setting(s) {diff}; pass a new --out, or the "
                "same --protocol/--shadows/--seed, to resume."
            )
    write_bytes_atomic(path, _json_bytes(setting))


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
      protocols: names in :data:`PROTOCOLS`, or :class:`Protocol` records.
      methods: ``"original"``, ``"retrain"`` and names of
        :data:`scissorhands_jax.baselines.METHODS` (default: all of them; with ``quick``
        :data:`QUICK_METHODS`). The original and Retrain are always audited (sanity).
      shadows: the population size K (even, at least 4; default 64, or 16 with ``quick``).
      quick: the small audit (16 models, the cheaper methods).
      seed: draws the candidate set, the halves and every key.
      backend: the population backend (``"auto"``, ``"vmap"``, ``"sequential"``).
      num_bootstrap: bootstrap resamples for the intervals.
      plot: write ``report.png`` (needs matplotlib).
      progress: progress bars.
      command: the command line, quoted in the report.

    Returns:
      The rows of ``audit.json``: one per protocol and method.

    Raises:
      ValueError: unknown protocol or method, bad ``shadows``, or an ``out`` holding
        another audit or in use by another process (all before any training).
    """
    from scissorhands_jax import _audit_report, _report
    from scissorhands_jax.baselines import METHODS

    unknown = [p for p in protocols if isinstance(p, str) and p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {sorted(PROTOCOLS)}.")
    resolved = [PROTOCOLS[p] if isinstance(p, str) else p for p in protocols]
    methods = list(methods or (QUICK_METHODS if quick else (ORIGINAL, *METHODS)))
    bad = [m for m in methods if m != ORIGINAL and m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {[ORIGINAL, *sorted(METHODS)]}.")
    methods = [m for m in (ORIGINAL, REFERENCE) if m not in methods] + methods  # sanity rows
    shadows = int(shadows or (QUICK_SHADOWS if quick else FULL_SHADOWS))
    if shadows < 4 or shadows % 2:
        raise ValueError(f"--shadows must be an even number of at least 4; got {shadows}.")
    if plot:
        _report.check_plotting()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory.")
    hyperparameters = {
        p.name: {m: method_hyperparameters(m, p) for m in methods if m not in (ORIGINAL, REFERENCE)}
        for p in resolved
    }
    setting = {
        "protocols": {p.name: dataclasses.asdict(p) for p in resolved},
        "shadows": shadows,
        "seed": int(seed),
        "backend": [backend, jax.default_backend()],
    }
    with run_directory(out, command=command):  # one writer at a time
        _check_setting(out, setting)
        results_path = out / "audit.json"
        rows: list[dict[str, Any]] = (
            json.loads(results_path.read_text()) if results_path.exists() else []
        )
        for protocol in resolved:
            model = build_model(protocol)
            data = make_population(protocol, shadows, seed)
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
                key = (protocol.name, method)
                rows = [r for r in rows if (r["protocol"], r["method"]) != key] + [row]
                write_bytes_atomic(results_path, _json_bytes(rows))
        _audit_report.write(rows, out, plot=plot, command=command)
        return rows


def sanity(rows: Sequence[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """Whether the audit can tell anything on ``protocol``: the original detectable
    (U-LiRA accuracy ≥ :data:`SANITY_ORIGINAL_MIN`), Retrain not (≤
    :data:`SANITY_RETRAIN_MAX`)."""
    by = {r["method"]: r for r in rows if r["protocol"] == protocol}
    orig = by.get(ORIGINAL, {}).get("ulira_accuracy")
    ret = by.get(REFERENCE, {}).get("ulira_accuracy")
    ok = orig is not None and ret is not None
    return {
        "original_ulira_accuracy": orig,
        "retrain_ulira_accuracy": ret,
        "valid": bool(ok and orig >= SANITY_ORIGINAL_MIN and ret <= SANITY_RETRAIN_MAX),
    }
