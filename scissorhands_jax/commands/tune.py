"""``scissorhands tune``: every method tuned on the membership audit with the same budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from scissorhands_jax.commands import _args
from scissorhands_jax.commands.audit import PROTOCOL_HELP, VARIANT_NAMES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands tune``."""
    from scissorhands_jax.commands.compare import METHOD_NAMES

    p = sub.add_parser(
        "tune",
        help="tune every method on the membership audit: same budget, declared space",
        description="Trains a population on a tuning seed that the audit never reports "
        "(its own candidate set, halves and keys), then gives every method the same number "
        "of trials, drawn at random without repeats from its declared search space, and "
        "scores each by |U-LiRA accuracy - 0.5| subject to TA >= Retrain's TA - 2 points. "
        "The originals and retrains are trained once; every trial goes to "
        "OUT/<protocol>/trials.jsonl, the choice per method to OUT/settings.json (pass it "
        "to `scissorhands audit --settings`), the rules and choices to OUT/report.md. "
        "Repair lengths are searched in optimiser steps, turned into epochs at the data's "
        "size. Re-running with the same --out resumes and skips finished trials.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--protocol", nargs="+", default=["digits_small"], help=PROTOCOL_HELP)
    p.add_argument(
        "--methods",
        nargs="+",
        choices=tuple(m for m in (*METHOD_NAMES, *VARIANT_NAMES) if m != "retrain"),
        help="methods to tune (default: all but Retrain, the reference)",
    )
    p.add_argument(
        "--trials", type=_args.positive_int, default=8, help="trials per method (default 8)"
    )
    p.add_argument(
        "--shadows",
        type=_args.positive_int,
        help="models per protocol (even; default 64, quick 16)",
    )
    p.add_argument("--quick", action="store_true", help="16 models")
    p.add_argument(
        "--tuning-seed",
        type=_args.seed,
        default=100,
        help="seed of the tuning population (default 100; audit refuses it with these settings)",
    )
    p.add_argument(
        "--backend", default="auto", choices=("auto", "vmap", "sequential"), help="population"
    )
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Runs the tuning and prints its report."""
    from scissorhands_jax.experiment.tune import run_tune

    run_tune(
        out=args.out,
        protocols=args.protocol,
        methods=args.methods,
        trials=args.trials,
        shadows=args.shadows,
        quick=args.quick,
        tuning_seed=args.tuning_seed,
        backend=args.backend,
        progress=not args.no_progress,
        command=_args.invocation(),
    )
    print((Path(args.out) / "report.md").read_text())
    return 0
