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


def format_table(rows: list[dict]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = [f"{row[c]:.2f}" if row.get(c) is not None else "-" for c in COLUMNS]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Scores the models, writes ``evaluation.json`` and prints the table; returns 0."""
    from scissorhands_jax.experiment.evaluation import evaluate_run
    from scissorhands_jax.experiment.rundir import existing_run, run_directory, write_json_atomic
    from scissorhands_jax.parallel import resolve_mesh

    cfg = _args.load_config(args, "evaluate")
    mesh = resolve_mesh(args.mesh)
    maker = f"scissorhands train {args.config}"
    run_dir = existing_run(args.run, maker=maker, holds=None)
    if args.retrain:  # the reference's run: a file or a run without a Retrain is said so
        existing_run(args.retrain, maker=maker, holds="retrain", flag="--retrain")
    refuse_overwrite(run_dir / "evaluation.json", args.overwrite)
    with run_directory(run_dir, create=False):
        refuse_overwrite(run_dir / "evaluation.json", args.overwrite)  # written meanwhile?
        reference = Path(args.retrain) if args.retrain else None
        payload = evaluate_run(cfg, run_dir, models=args.models, reference=reference,
                               progress=not args.no_progress, mesh=mesh)  # fmt: skip
        write_json_atomic(run_dir / "evaluation.json", payload)
    print(_legends.under(format_table(payload["rows"]), _legends.CLASSIFIER))
    print(f"\nwrote {run_dir / 'evaluation.json'}")
    return 0


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """Raises ValueError when ``path`` exists and ``overwrite`` is off."""
    if path.exists() and not overwrite:
        raise ValueError(
            f"{path} already exists (an earlier evaluation); pass --overwrite to replace it."
        )
