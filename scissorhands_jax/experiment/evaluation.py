"""Scoring a classifier run: UA, RA, TA, MIA-efficacy, Avg. Gap and RTE of its models.

``scissorhands evaluate`` is this module's :func:`evaluate_run` on a run directory of
``scissorhands train`` (and ``unlearn``), with the config that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scissorhands_jax._versions import versions
from scissorhands_jax.experiment import pipeline as pipe
from scissorhands_jax.metrics import avg_gap, classification_metrics


def score(model, params, model_state, split, *, batch_size: int, progress: bool, mesh=None) -> dict:
    """UA, RA, TA and the two MIA-efficacies of one model on a split."""
    sets = pipe.predictions(model, params, model_state, split, batch_size=batch_size,
                            progress=progress, mesh=mesh)  # fmt: skip
    return classification_metrics(**sets)


def evaluate_run(
    cfg: dict,
    run_dir: Path,
    *,
    models: Sequence[str],
    reference: Path | None = None,
    progress: bool = True,
    mesh=None,
) -> dict[str, Any]:
    """Scores the ``models`` (of ``"retrain"``, ``"original"``, ``"unlearned"``) of a run.

    Args:
      cfg: the config that made the run (:func:`~scissorhands_jax.experiment.config.load_config`).
      run_dir: the run directory.
      models: the models to score; Retrain is always scored, as the Avg. Gap's reference.
      reference: the run directory whose ``retrain/`` is the reference (default: ``run_dir``).
      progress: progress bars.
      mesh: score data-parallel on this mesh (None: one device).

    Returns:
      The record of ``evaluation.json``: the request's sizes, one row per model of
      ``models`` (UA, RA, TA, MIA_entropy, MIA_confidence, avg_gap against Retrain with the
      entropy MIA, rte_s) and the versions of the stack.

    Raises:
      ValueError: ``run_dir`` was written for another request than ``cfg``, or a model's
        checkpoint is missing or damaged: before any scoring.
    """
    ref_dir = reference or run_dir
    split = pipe.build_split(cfg, progress=progress)
    why = split.indices.matches_saved(run_dir)
    if why:
        raise ValueError(f"{why}: {run_dir} was written for another request than this config.")
    model = pipe.build_model(cfg, split.dataset)
    loaded = {}  # load everything first: a missing checkpoint fails before minutes of scoring
    for name in ["retrain", *(m for m in models if m != "retrain")]:
        if name == "unlearned":
            loaded[name] = pipe.load_unlearned(run_dir, cfg, split, model)[:2]
        else:
            where = ref_dir if name == "retrain" else run_dir
            loaded[name] = pipe.load_trained(where, name, cfg, split, model)
    rows, reference_row = [], None
    for name, (params, model_state) in loaded.items():
        row = {"model": name}
        row.update(score(model, params, model_state, split, batch_size=cfg["eval"]["batch_size"],
                         progress=progress, mesh=mesh))  # fmt: skip
        reference_row = row if name == "retrain" else reference_row
        row["avg_gap"] = avg_gap(row, reference_row)
        log = pipe.read_json((ref_dir if name == "retrain" else run_dir) / name / "log.json", {})
        row["rte_s"] = log.get("rte_s", log.get("train_time_s"))
        rows.append(row)
    return {
        "config": cfg["config_path"],
        "smoke": cfg["smoke"],
        "forget": cfg["data"]["forget"],
        "num_forget": int(split.indices.forget.size),
        "num_retain": int(split.indices.retain.size),
        "num_test": int(split.test_indices.size),
        "mia_in_avg_gap": "MIA_entropy",
        "rows": [r for r in rows if r["model"] in models],
        "versions": versions(),
    }
