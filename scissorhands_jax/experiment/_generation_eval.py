"""The measuring half of ``diffusion-evaluate``: samples of every model, judged, drawn."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._versions import versions
from scissorhands_jax.diffusion.data import GenerationData
from scissorhands_jax.diffusion.grid import (
    annotate,
    class_labels,
    image_grid,
    save_png,
    side_by_side,
)
from scissorhands_jax.diffusion.metrics import frechet_distance_features, generation_metrics
from scissorhands_jax.diffusion.sampler import sample
from scissorhands_jax.experiment._generation_setup import PIPELINE_KEYS
from scissorhands_jax.experiment.pipeline import read_json
from scissorhands_jax.experiment.rundir import write_json_atomic
from scissorhands_jax.models.adapters import predict_probs


def evaluate_run(
    cfg: dict,
    run_dir: Path,
    data: GenerationData,
    model,
    weights: dict[str, Any],
    judge_parts: tuple,
    *,
    fid_features=None,
    after: list[str],
) -> dict[str, Any]:
    """Samples, judges and draws every model of ``weights`` (name -> parameters, in table
    order), writes ``evaluation.json`` and the PNGs; returns the payload. ``after``: the
    names that may appear as "after" columns of ``before_after.png``, in order."""
    judge, features, j_params, j_state = judge_parts
    s = cfg["sample"]
    test_x, test_y = data.test_set()
    test_probs = np.asarray(predict_probs(judge, j_params, j_state, jnp.asarray(test_x)))
    judge_acc = float(np.mean(test_probs.argmax(-1) == test_y) * 100)
    print(f"judge ({cfg['classifier']['model']}): test accuracy {judge_acc:.2f} %")

    k, c_f = data.num_classes, data.forget_class
    class_rows = class_labels(k, c_f)  # the grids' rows
    labels = np.repeat(np.arange(k), s["per_class"]).astype(np.int32)
    real = data.images("retain")
    real_feats = features(j_params, j_state, data.judge_input(real))
    fid_real = None if fid_features is None else fid_features((real + 1.0) / 2.0)
    kwargs = {n: v for n, v in s.items() if n not in PIPELINE_KEYS["sample"]}
    rows, grids = [], {}
    for name, params in weights.items():
        start = time.perf_counter()
        x = sample(model, params, jax.random.key(s["seed"]), jnp.asarray(labels), **kwargs)
        x = np.asarray(x)
        x_judge = data.judge_input(x)
        probs = np.asarray(predict_probs(judge, j_params, j_state, x_judge))
        other = labels != c_f
        row = {"model": name}
        row.update(
            generation_metrics(
                probs,
                labels,
                c_f,
                generated_features=features(j_params, j_state, x_judge[other]),
                real_features=real_feats,
            )
        )
        if fid_features is not None:
            row["fid"] = frechet_distance_features(fid_features((x[other] + 1.0) / 2.0), fid_real)
        log = read_json(run_dir / name / "log.json", {})
        row["rte_s"] = log.get("rte_s", log.get("train_time_s"))
        row["eval_s"] = time.perf_counter() - start
        rows.append(row)
        h, w, c = data.image_shape
        per = ((x + 1.0) / 2.0).reshape(k, s["per_class"], h, w, c)
        grids[name] = image_grid(per[:, : s["grid_per_class"]], scale=max(32 // h, 1))
        title = f"{name}: generated samples, one row per class"
        image = annotate(grids[name], title=title, row_labels=class_rows)
        save_png(run_dir / f"grid_{name}.png", image)
    shown = [n for n in after if n in grids]
    both = side_by_side([grids[n] for n in ("original", *shown)])
    heads = ["before: original", *(f"after: {n}" for n in shown)]
    title = f"Generated samples before and after forgetting class {c_f}"
    image = annotate(both, title=title, column_labels=heads, row_labels=class_rows)
    save_png(run_dir / "before_after.png", image)
    payload = {
        "forget_class": c_f,
        "judge": cfg["classifier"]["model"],
        "judge_test_acc": judge_acc,
        "sample": s,
        "rows": rows,
        "before_after": ["original", *shown],
        "files": sorted(p.name for p in run_dir.glob("*.png")),
        "devices": [str(d) for d in jax.devices()],
        "versions": versions(),
    }
    write_json_atomic(run_dir / "evaluation.json", payload)
    return payload
