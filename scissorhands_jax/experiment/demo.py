"""digits-10 end to end: original, retrain and Scissorhands, evaluated as in the paper.

The digits-10 protocol (scikit-learn's embedded digits, no download). This
module is the runner behind ``scissorhands demo``; it takes keyword arguments only.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._seed import check_seed
from scissorhands_jax.baselines.scissorhands import scissorhands
from scissorhands_jax.data import array_source, load_digits10
from scissorhands_jax.data.digits import SCENARIOS
from scissorhands_jax.experiment.rundir import write_json_atomic  # noqa: F401  (re-exported)
from scissorhands_jax.method import check_settings
from scissorhands_jax.metrics import INFORMATIVE_ATTACK_AUC, avg_gap, classification_metrics
from scissorhands_jax.models import DigitsCNN, linen_model
from scissorhands_jax.models.adapters import predict_probs
from scissorhands_jax.parallel import on_mesh
from scissorhands_jax.settings import FLAT_NAMES
from scissorhands_jax.training import fit, sgd

TRAIN_DEFAULTS = {"lr": 0.05, "epochs": 30, "batch_size": 64}
"""Original and Retrain: SGD lr 0.05, momentum 0.9, wd 5e-4, batch 64, 30 epochs."""

UNLEARN_DEFAULTS = {
    "lr": 5e-3,
    "epochs": 10,
    "sparsity": 0.97,
    "lam": 0.05,
    "memory_num": 1,
    "prune_num": 1,
    "batch_size": 64,
    "margin": 0.5,
    "eps": 1e-3,
    "projection": "gem",
    "project_every": 1,
    "reinit": "model",
}
"""Scissorhands on digits-10 (the protocol's settings): all but the first conv is eligible."""

METRIC_KEYS = (
    "UA",
    "RA",
    "TA",
    "MIA_entropy",
    "MIA_entropy_attack_auc",
    "MIA_confidence",
    "avg_gap",
    "rte_s",
)


def split_predictions(model, params, state, split) -> dict[str, np.ndarray]:
    """Softmax outputs and labels of the forget, retain and test sets of ``split``, as the
    keyword arguments of the metric suites (``forget_probs``, ``forget_labels``, ...)."""
    out = {}
    for name in ("forget", "retain", "test"):
        data = getattr(split, name)
        probs = predict_probs(model, params, state, jnp.asarray(data["image"]))
        out[f"{name}_probs"] = np.asarray(probs)
        out[f"{name}_labels"] = data["label"]
    return out


def _evaluate(model, params, state, split) -> dict[str, float]:
    return classification_metrics(**split_predictions(model, params, state, split))


def train_digits(model, data, seed, train_cfg, progress=False, desc="train", mesh=None):
    """``(params, state, seconds)``: ``model`` trained on array ``data`` with the digits
    schedule ``train_cfg`` (:data:`TRAIN_DEFAULTS`): init key ``seed``, shuffling key
    ``1000 + seed``, plain SGD (data-parallel on ``mesh`` when given)."""
    params, state = model.init(jax.random.key(seed))
    start = time.perf_counter()
    params, state, _ = fit(
        model.loss,
        params,
        state,
        array_source(data, train_cfg["batch_size"]),
        key=jax.random.key(1000 + seed),
        epochs=train_cfg["epochs"],
        tx=sgd(train_cfg["lr"]),
        progress=progress,
        desc=desc,
        mesh=mesh,
    )
    jax.block_until_ready(params)
    return params, state, time.perf_counter() - start


def run_digits(
    *,
    scenarios: Sequence[str] = SCENARIOS,
    seeds: Sequence[int] = (0, 1, 2),
    train: dict[str, Any] | None = None,
    unlearn: dict[str, Any] | None = None,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> list[dict[str, Any]]:
    """Runs the digits-10 protocol and returns one row per scenario x method x seed.

    Per seed, the original model is trained on the whole training split (init key
    ``seed``); per scenario and seed, the retrained oracle (same init) on the retain set
    and Scissorhands from the original. Rows carry UA, RA, TA, MIA_entropy,
    MIA_confidence (percent), the attacks' held-out AUCs ``MIA_entropy_attack_auc`` and
    ``MIA_confidence_attack_auc`` (0.5: the attack learned nothing and its MIA is noise),
    avg_gap (against the retrain row, over UA, RA, TA and MIA_entropy; ``avg_gap_mia``
    names the MIA) and rte_s (wall-clock seconds of training or unlearning, compilation
    included, evaluation not).

    Args:
      scenarios: any of ``"random10"``, ``"class0"``.
      seeds: seeds of the forget set (random10), the initialisation and the method.
      train: overrides of :data:`TRAIN_DEFAULTS`.
      unlearn: overrides of :data:`UNLEARN_DEFAULTS`.
      progress: show progress bars.
      mesh: train and unlearn data-parallel on this mesh (None: one device).

    Returns:
      A list of row dicts.

    Raises:
      ValueError: an unknown scenario or setting.
    """
    train_cfg, shs_cfg = check_digits_run(scenarios, seeds, train, unlearn)
    model = linen_model(DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        full = load_digits10(scenarios[0], seed)
        original = train_digits(model, full.train, seed, train_cfg, progress, f"original s{seed}",
                                mesh)  # fmt: skip
        for scenario in scenarios:
            split = load_digits10(scenario, seed)
            retrain = train_digits(
                model, split.retain, seed, train_cfg, progress, f"retrain s{seed}", mesh
            )
            start = time.perf_counter()
            placed = original[:2] if mesh is None else on_mesh(original[:2], mesh)
            result = scissorhands(
                model,
                *placed,
                retain=split.retain,
                forget=split.forget,
                key=jax.random.key(2000 + seed),
                eligible="all_but_first_conv",
                progress=progress,
                **shs_cfg,
            )
            jax.block_until_ready(result.params)
            unlearned = (result.params, result.model_state, time.perf_counter() - start)
            ref = None
            for method, (params, state, seconds) in (
                ("retrain", retrain),
                ("original", original),
                ("scissorhands", unlearned),
            ):
                row = {"scenario": scenario, "method": method, "seed": int(seed)}
                row.update(_evaluate(model, params, state, split))
                ref = row if method == "retrain" else ref
                row["avg_gap"] = avg_gap(row, ref)
                row["avg_gap_mia"] = "MIA_entropy"
                row["rte_s"] = float(seconds)
                rows.append(row)
    return rows


def check_digits_run(
    scenarios: Sequence[str],
    seeds: Sequence[int],
    train: dict[str, Any] | None,
    unlearn: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The complete ``(train, unlearn)`` settings of a :func:`run_digits` call.

    Raises:
      ValueError: an unknown or repeated scenario, no seeds or a repeated one (a
        repeated seed would count one run twice in the mean and std), an unknown
        setting or a bad value.
    """
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad or not scenarios or len(set(scenarios)) != len(scenarios):
        raise ValueError(f"scenarios must be distinct names of {SCENARIOS}; got {list(scenarios)}.")
    if not seeds or len(set(seeds)) != len(seeds) or not all(_is_seed(s) for s in seeds):
        raise ValueError(
            f"seeds must be distinct integers in [0, 2**31) (each is one run); got {list(seeds)}."
        )
    train_cfg = _merge(TRAIN_DEFAULTS, train, "train")
    for key, low in (("epochs", 1), ("batch_size", 1)):
        value = train_cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"train {key} must be an integer >= {low}, got {value!r}.")
    lr = train_cfg["lr"]
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < float("inf"):
        raise ValueError(f"train lr must be a finite number > 0, got {lr!r}.")
    shs_cfg = _merge(UNLEARN_DEFAULTS, unlearn, "unlearn", also=FLAT_NAMES)
    check_settings(**shs_cfg)
    return train_cfg, shs_cfg


def _is_seed(value: Any) -> bool:
    try:
        check_seed("seed", value)
    except ValueError:
        return False
    return True


def _merge(defaults: dict, overrides: dict | None, name: str, also: Sequence[str] = ()) -> dict:
    known = set(defaults) | set(also)
    unknown = set(overrides or {}) - known
    if unknown:
        raise ValueError(f"unknown {name} setting(s) {sorted(unknown)}; known: {sorted(known)}.")
    return {**defaults, **(overrides or {})}


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std (ddof 0) of every metric per scenario and method, in row order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["method"]), []).append(row)
    out = []
    for (scenario, method), members in groups.items():
        entry: dict[str, Any] = {"scenario": scenario, "method": method, "n": len(members)}
        for key in METRIC_KEYS:
            values = np.array([m[key] for m in members], dtype=float)
            entry[key] = (float(values.mean()), float(values.std()))
        out.append(entry)
    return out


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of mean ± std per scenario and method; † marks an entropy MIA whose
    attack's held-out AUC is below :data:`~scissorhands_jax.metrics.INFORMATIVE_ATTACK_AUC`
    (uninformative: its value is noise)."""
    head = "| scenario | method | " + " | ".join(METRIC_KEYS) + " |"
    lines = [head, "|" + "---|" * (len(METRIC_KEYS) + 2)]
    for entry in summarize(rows):
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in (entry[k] for k in METRIC_KEYS)]
        if entry["MIA_entropy_attack_auc"][0] < INFORMATIVE_ATTACK_AUC:
            cells[METRIC_KEYS.index("MIA_entropy")] += " †"
        lines.append(f"| {entry['scenario']} | {entry['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prepare_out_dir(out: str | os.PathLike) -> Path:
    """Creates ``out`` and checks it is writable, before any work is done (the commands
    also lock it: :func:`scissorhands_jax.experiment.rundir.run_directory`)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a directory.")
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path):
        pass
    return path
