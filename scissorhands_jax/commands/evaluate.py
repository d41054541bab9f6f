"""``scissorhands evaluate``: UA, RA, TA, MIA-efficacy, Avg. Gap and RTE of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from scissorhands_jax.commands import _args, _legends

MODELS = ("retrain", "original", "unlearned")
COLUMNS = ("UA", "RA", "TA", "MIA_entropy", "MIA_confidence", "avg_gap", "rte_s")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="UA, RA, TA, MIA-efficacy, Avg. Gap (against Retrain) and RTE of a run",
        description="Evaluates the run's models on its forget, retain and test sets (the "
        "forgotten classes removed from test for class-wise requests); writes "
        "RUN/evaluation.json and prints a table. Avg. Gap is against the retrained oracle "
        "(entropy MIA); RTE is the wall-clock time of training or unlearning. An existing "
        "evaluation.json is replaced only with --overwrite.",
    )
    _args.add_common_arguments(p)
    p.add_argument("--run", required=True, help="the run directory")
    p.add_argument(
        "--retrain",
        help="a run directory whose retrain/ is the reference (default: --run itself)",
    )
    p.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="which models to score"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing RUN/evaluation.json"
    )


def score(model, params, model_state, split, *, batch_size: int, progress: bool, mesh=None) -> dict:
    """UA, RA, TA and the two MIA-efficacies of one model on a split."""
    from scissorhands_jax.experiment.pipeline import predictions
    from scissorhands_jax.metrics import classification_metrics

    sets = predictions(model, params, model_state, split, batch_size=batch_size,
                       progress=progress, mesh=mesh)  # fmt: skip
    return classification_metrics(**sets)


def format_table(rows: list[dict]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = [f"{row[c]:.2f}" if row.get(c) is not None else "-" for c in COLUMNS]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Scores the models, writes ``evaluation.json`` and prints the table; returns 0."""
    from scissorhands_jax.experiment.rundir import existing_run, run_directory
    from scissorhands_jax.parallel import resolve_mesh

    cfg = _args.load_config(args, "evaluate")
    args.mesh = resolve_mesh(args.mesh)
    maker = f"scissorhands train {args.config}"
    run_dir = existing_run(args.run, maker=maker, holds=None)
    if args.retrain:  # the reference's run: a file or a run without a Retrain is said so
        existing_run(args.retrain, maker=maker, holds="retrain", flag="--retrain")
    refuse_overwrite(run_dir / "evaluation.json", args.overwrite)
    with run_directory(run_dir, create=False):
        refuse_overwrite(run_dir / "evaluation.json", args.overwrite)  # written meanwhile?
        return _evaluate(args, cfg, run_dir)


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """Raises ValueError when ``path`` exists and ``overwrite`` is off."""
    if path.exists() and not overwrite:
        raise ValueError(
            f"{path} already exists (an earlier evaluation); pass --overwrite to replace it."
        )


def _evaluate(args: argparse.Namespace, cfg: dict, run_dir: Path) -> int:
    from scissorhands_jax._versions import versions
    from scissorhands_jax.experiment import pipeline as pipe
    from scissorhands_jax.experiment.rundir import write_json_atomic
    from scissorhands_jax.metrics import avg_gap

    progress = not args.no_progress
    ref_dir = Path(args.retrain) if args.retrain else run_dir
    split = pipe.build_split(cfg, progress=progress)
    why = split.indices.matches_saved(run_dir)
    if why:
        raise ValueError(f"{why}: {run_dir} was written for another request than this config.")
    model = pipe.build_model(cfg, split.dataset)
    loaded = {}  # load everything first: a missing checkpoint fails before minutes of scoring
    for name in ["retrain", *(m for m in args.models if m != "retrain")]:
        if name == "unlearned":
            loaded[name] = pipe.load_unlearned(run_dir, cfg, split, model)[:2]
        else:
            where = ref_dir if name == "retrain" else run_dir
            loaded[name] = pipe.load_trained(where, name, cfg, split, model)
    rows, reference = [], None
    for name, (params, model_state) in loaded.items():
        row = {"model": name}
        row.update(
            score(
                model,
                params,
                model_state,
                split,
                batch_size=cfg["eval"]["batch_size"],
                progress=progress,
                mesh=args.mesh,
            )
        )
        reference = row if name == "retrain" else reference
        row["avg_gap"] = avg_gap(row, reference)
        row["rte_s"] = _rte(ref_dir if name == "retrain" else run_dir, name)
        rows.append(row)
    rows = [r for r in rows if r["model"] in args.models]
    payload = {
        "config": cfg["config_path"],
        "smoke": cfg["smoke"],
        "forget": cfg["data"]["forget"],
        "num_forget": int(split.indices.forget.size),
        "num_retain": int(split.indices.retain.size),
        "num_test": int(split.test_indices.size),
        "mia_in_avg_gap": "MIA_entropy",
        "rows": rows,
        "versions": versions(),
    }
    write_json_atomic(run_dir / "evaluation.json", payload)
    print(_legends.under(format_table(rows), _legends.CLASSIFIER))
    print(f"\nwrote {run_dir / 'evaluation.json'}")
    return 0


def _rte(run_dir: Path, name: str) -> float | None:
    from scissorhands_jax.experiment.pipeline import read_json

    log = read_json(run_dir / name / "log.json", {})
    return log.get("rte_s", log.get("train_time_s"))
