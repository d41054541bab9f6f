"""``scissorhands diffusion-evaluate``: generation metrics of every DDPM of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from scissorhands_jax.commands import _args, _legends

COLUMNS = ("forget_share", "forget_prob", "other_acc", "frechet", "fid", "rte_s")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands diffusion-evaluate``."""
    p = sub.add_parser(
        "diffusion-evaluate",
        help="forget-class share, other-class accuracy and Fréchet distance of every DDPM "
        "of a run; writes RUN/evaluation.json and PNG grids",
        description="Samples sample.per_class images per class from every model of the run "
        "(original, retrain, and each unlearned method present; the same initial noise "
        "for all), judges them with the run's classifier and writes RUN/evaluation.json, "
        "RUN/grid_<model>.png and RUN/before_after.png (original | unlearned models).",
    )
    _args.add_common_arguments(p, mesh=False)  # sampling runs on one device
    p.add_argument("--run", required=True, help="the run directory of diffusion-train")
    p.add_argument(
        "--fid-features",
        default=None,
        metavar="MODULE:FUNCTION",
        help="an importable features(images in [0, 1], NHWC) -> (N, D) function (overrides "
        "eval.fid_features): adds 'fid' to every row",
    )
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="NPZ",
        help="weights of the FID Inception-v3 (python -m "
        "scissorhands_jax.diffusion.convert_inception): adds the standard FID to every row",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing RUN/evaluation.json (and its PNG grids)",
    )


def feature_function(spec: str | None, inception_weights: str | None):
    """The ``features(images in [0, 1]) -> (N, D)`` of ``MODULE:FUNCTION`` or of the FID
    Inception-v3 weights, or None.

    Raises:
      ValueError: both given, a malformed or unimportable spec.
    """
    import importlib

    if spec and inception_weights:
        raise ValueError("give --fid-features or --inception-weights, not both.")
    if inception_weights:
        from scissorhands_jax.diffusion.inception import inception_fid_features

        return inception_fid_features(inception_weights)
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--fid-features wants MODULE:FUNCTION, got {spec!r}.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--fid-features {spec}: {err}") from err


def models_present(run_dir: Path) -> list[str]:
    """``retrain``, ``original`` and the unlearned methods with a checkpoint, in order."""
    from scissorhands_jax.commands import _diffusion as dif

    names = ["retrain", "original", *dif.METHODS]
    return [n for n in names if n == "original" or dif.committed_steps(run_dir, n)]


def format_table(rows: list[dict]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = [f"{row[c]:.3f}" if row.get(c) is not None else "-" for c in COLUMNS]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluates every model of the run; returns 0."""
    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.commands.evaluate import refuse_overwrite
    from scissorhands_jax.experiment.rundir import existing_run, run_directory

    cfg = dif.config_from_args(args)
    maker = f"scissorhands diffusion-train {cfg['config_path']}"
    run_dir = existing_run(args.run, maker=maker, kind="DDPM")
    s = cfg["sample"]
    if s["per_class"] < 2:
        raise ValueError("sample.per_class must be at least 2 (the Fréchet distance needs it).")
    fid_features = feature_function(
        args.fid_features or cfg["eval"]["fid_features"], args.inception_weights
    )
    refuse_overwrite(run_dir / "evaluation.json", args.overwrite)
    with run_directory(run_dir, create=False):
        refuse_overwrite(run_dir / "evaluation.json", args.overwrite)  # written meanwhile?
        return _evaluate(args, cfg, run_dir, fid_features)


def _evaluate(args: argparse.Namespace, cfg: dict, run_dir: Path, fid_features) -> int:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from scissorhands_jax._versions import versions
    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.diffusion.grid import (
        annotate,
        class_labels,
        image_grid,
        save_png,
        side_by_side,
    )
    from scissorhands_jax.diffusion.metrics import frechet_distance_features, generation_metrics
    from scissorhands_jax.diffusion.sampler import sample
    from scissorhands_jax.experiment.pipeline import read_json
    from scissorhands_jax.experiment.rundir import write_json_atomic
    from scissorhands_jax.models.adapters import predict_probs

    s = cfg["sample"]
    data = dif.build_data(cfg, progress=not args.no_progress)
    model = dif.build_model(cfg, data)
    judge, features = dif.build_judge(cfg, data)
    j_params, j_state = dif.load_judge(run_dir, cfg, data, judge)
    names = models_present(run_dir)
    weights = {}
    for name in names:
        if name in dif.GENERATORS:
            weights[name] = dif.load_generator(run_dir, name, cfg, data, model)
        else:
            weights[name] = dif.load_unlearned(run_dir, name, cfg, data, weights["original"])
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
    kwargs = {n: v for n, v in s.items() if n not in dif.PIPELINE_KEYS["sample"]}
    rows, grids = [], {}
    for name in names:
        start = time.perf_counter()
        x = sample(model, weights[name], jax.random.key(s["seed"]), jnp.asarray(labels), **kwargs)
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
    after = [n for n in dif.METHODS if n in grids]
    both = side_by_side([grids[n] for n in ("original", *after)])
    heads = ["before: original", *(f"after: {n}" for n in after)]
    title = f"Generated samples before and after forgetting class {c_f}"
    image = annotate(both, title=title, column_labels=heads, row_labels=class_rows)
    save_png(run_dir / "before_after.png", image)
    payload = {
        "forget_class": c_f,
        "judge": cfg["classifier"]["model"],
        "judge_test_acc": judge_acc,
        "sample": s,
        "rows": rows,
        "before_after": ["original", *(n for n in dif.METHODS if n in grids)],
        "files": sorted(p.name for p in run_dir.glob("*.png")),
        "devices": [str(d) for d in jax.devices()],
        "versions": versions(),
    }
    write_json_atomic(run_dir / "evaluation.json", payload)
    print(_legends.under(format_table(rows), _legends.DIFFUSION))
    print(f"wrote {run_dir / 'evaluation.json'} and {', '.join(payload['files'])}")
    return 0
