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
from scissorhands_jax._versions import versions
from scissorhands_jax.data import load_digits10
from scissorhands_jax.experiment.rules import SEED_LIMIT
from scissorhands_jax.experiment.rundir import (
    check_setting,
    read_state,
    run_directory,
    write_bytes_atomic,
)
from scissorhands_jax.models import DigitsCNN, linen_model
from scissorhands_jax.parallel import on_mesh
from scissorhands_jax.training import sgd

REFERENCE, ORIGINAL = "retrain", "original"
SANITY_ORIGINAL_MIN = 0.60
"""The least U-LiRA accuracy of the untouched original for a protocol to be auditable:
besides standing clear of chance (:func:`sanity`), the attack must be right on at least
60 % of its decisions, or the methods' rows would have no room between the original and
chance to be ranked in."""


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
NULL_LEVEL = 0.95
"""The quantile of the pair-flip null of Retrain taken as the bound of chance."""


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


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "scissorhands_cal": ("scissorhands", {"calibration": "temperature"}),
    "scissorhands_soft": ("scissorhands", {}),
    "scissorhands_soft_cal": ("scissorhands", {"calibration": "temperature"}),
}
"""Named opt-in variants of a method: name -> (the method it runs, the settings fixed on
top of its defaults). ``_cal`` adds the Retrain-free output temperature (fitted on the
test set, which no audit model trains on); ``_soft`` marks a softer projection schedule,
which its search space in :mod:`scissorhands_jax.experiment.tune` spells out (``project_epochs``).
Each is tuned with the same budget as every other method and audited as a row of its
own; ``scissorhands`` itself stays the published method."""


def base_method(name: str) -> str:
    """The method of :data:`scissorhands_jax.baselines.METHODS` that ``name`` runs (itself,
    or the method a :data:`VARIANTS` entry names)."""
    return VARIANTS[name][0] if name in VARIANTS else name


def method_names() -> tuple[str, ...]:
    """Every method the audit can run: the baselines' registry, then the variants."""
    from scissorhands_jax.baselines import METHODS

    return (*METHODS, *VARIANTS)


def method_hyperparameters(name: str, protocol: Protocol) -> dict[str, Any]:
    """The hyperparameters method ``name`` runs with in the audit: those of the digits
    comparison (:data:`scissorhands_jax.experiment.compare.DIGITS_HYPERPARAMETERS`), with
    Scissorhands' eligible set adapted to the protocol's model (all but the first layer),
    and a variant's fixed settings (:data:`VARIANTS`) on top of its method's."""
    from scissorhands_jax.experiment.compare import DIGITS_HYPERPARAMETERS

    base = base_method(name)
    hps = dict(DIGITS_HYPERPARAMETERS[base])
    if base == "scissorhands" and protocol.model == "digits_mlp":
        hps["eligible"] = r"^(?!hidden1/)"
    if name in VARIANTS:
        hps.update(VARIANTS[name][1])
    return hps


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
      protocols: names in :data:`PROTOCOLS`, or :class:`Protocol` records.
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
        them (:func:`scissorhands_jax.experiment.tune.concrete_hyperparameters`); the others keep
        :func:`method_hyperparameters`. Each row's ``tuning`` says which, with the
        budget and the search space.
      mesh: run the methods data-parallel on this mesh (each model placed on it before
        its method runs; the populations are vectorised with ``vmap`` instead); None:
        one device.

    Returns:
      The rows of ``audit.json``: one per protocol and method.

    Raises:
      ValueError: unknown protocol or method, bad ``shadows`` or ``seed``, unreadable
        ``settings`` or ``seed`` equal to their tuning seed, or an ``out`` holding
        another audit, something else, a damaged state file, or in use by another
        process (all before any training).
    """
    from scissorhands_jax.experiment import _audit_report, _report

    unknown = [p for p in protocols if isinstance(p, str) and p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {sorted(PROTOCOLS)}.")
    resolved = [PROTOCOLS[p] if isinstance(p, str) else p for p in protocols]
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
        _report.check_plotting()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory.")
    populations = {p.name: make_population(p, shadows, seed) for p in resolved}
    hyperparameters, tuning = _audit_hyperparameters(resolved, methods, populations, settings, seed)
    setting = {
        "protocols": {p.name: dataclasses.asdict(p) for p in resolved},
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
        _audit_report.write(rows, out, plot=plot, command=command)
        return rows


def _audit_hyperparameters(resolved, methods, populations, settings, seed):
    """Per protocol, the hyperparameters of each method and where they come from: a
    tune's ``settings`` where it chose some, else :func:`method_hyperparameters`."""
    from scissorhands_jax.experiment import tune

    if settings is not None:
        settings = tune.load_settings(settings)
        if int(seed) == int(settings["tuning_seed"]):
            raise ValueError(
                f"--seed {seed} is the tuning seed of these --settings: a seed the "
                "hyperparameters were chosen on is never reported; pass another --seed."
            )
    hyperparameters, tuning = {}, {}
    for p in resolved:
        tuned = tune.tuned_hyperparameters(settings, p.name) if settings else {}
        hyperparameters[p.name], tuning[p.name] = {}, {}
        for m in methods:
            if m in (ORIGINAL, REFERENCE):
                continue
            if m in tuned:
                data = populations[p.name]
                hyperparameters[p.name][m] = tune.concrete_hyperparameters(m, tuned[m], p, data)
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


def sanity(rows: Sequence[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """Whether the audit can tell anything on ``protocol``.

    The bound of chance is the design's own null: Retrain's outputs scored against
    themselves with the roles of the two models of each pair flipped at random
    (:func:`scissorhands_jax.metrics.ulira_null`); ``ulira_null_bound`` is its
    :data:`NULL_LEVEL` quantile. Valid when Retrain is consistent with that null (its
    accuracy at most the bound) and the original is detectable: its accuracy at least
    :data:`SANITY_ORIGINAL_MIN` and the lower end of its model-level interval above the
    bound. Rows without a null (written before it existed) are never valid.
    """
    by = {r["method"]: r for r in rows if r["protocol"] == protocol}
    orig, ret = by.get(ORIGINAL, {}), by.get(REFERENCE, {})
    bound = ret.get("ulira_null_bound")
    ok = "ulira_accuracy" in orig and "ulira_accuracy" in ret and bound is not None
    return {
        "original_ulira_accuracy": orig.get("ulira_accuracy"),
        "retrain_ulira_accuracy": ret.get("ulira_accuracy"),
        "null_range": ret.get("ulira_null_range"),
        "null_bound": bound,
        "valid": bool(
            ok
            and ret["ulira_accuracy"] <= bound
            and orig["ulira_accuracy"] >= SANITY_ORIGINAL_MIN
            and orig["ulira_accuracy_ci"][0] > bound
        ),
    }
