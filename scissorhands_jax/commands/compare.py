"""``scissorhands compare``: every method on the same forget requests, with a report."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from scissorhands_jax._choices import METHOD_NAMES
from scissorhands_jax.commands import _args, _set

MIA_CHOICES = ("correctness", "confidence", "entropy", "modified_entropy", "probabilities", "loss")
"""The MIA features the Avg. Gap can use: the five SVC features and the loss attack."""

DIGITS = ("digits10_random10", "digits10_class0")
"""The digits-10 protocol's configs, the default ``--setting`` (a test checks they agree
with :data:`scissorhands_jax.experiment.compare.DIGITS`)."""

CONFIG_SECTIONS = ("data", "model", "train", "retrain", "unlearn", "eval")
"""``--set`` targets that are config sections; ``methods.NAME.KEY=VALUE`` sets a method's
hyperparameter (:func:`scissorhands_jax.commands._set.parse_set`)."""

SET_HELP = (
    "override a config value, e.g. --set train.epochs=2, or a method's hyperparameter: "
    "--set methods.ft.lr=0.02 (short: ft.lr=0.02; Scissorhands: unlearn.lr=... or "
    "scissorhands.lr=...)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands compare``."""
    p = sub.add_parser(
        "compare",
        help="all unlearning methods on experiment configs: results.json/csv, report.md/png",
        description="Trains (or loads) one original and one retrain per config and seed, runs "
        "every requested method on the same forget set and writes OUT/results.json (one row "
        "per config x method x seed), results.csv, report.md and report.png. Re-running with "
        "the same --out resumes: finished rows and trained models (or their last checkpoints) "
        "are reused, and finished rows of other hyperparameters are kept unless --overwrite. "
        "A config's methods section holds the methods' hyperparameters.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--setting", nargs="+", default=list(DIGITS), metavar="CONFIG",
                   help="experiment configs, one scenario each: an installed config's name "
                   "(e.g. digits10_class0, cifar10_random10) or a config file (default: the "
                   "two digits-10 configs)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=_args.seed, default=[0],
                   help="each in [0, 2**31); default 0")  # fmt: skip
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument("--smoke", action="store_true", help="merge each config's SMOKE section")
    p.add_argument("--data-dir", help="the configs' data directory (data.data_dir)")
    _args.add_set_argument(p, help=SET_HELP)
    p.add_argument("--mia-feature", default="entropy", choices=MIA_CHOICES,
                   help="the MIA in the Avg. Gap")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace finished rows made with other hyperparameters")  # fmt: skip
    p.add_argument("--no-plot", action="store_true", help="skip report.png (no matplotlib)")
    p.add_argument("--no-progress", action="store_true", help=_args.NO_PROGRESS_HELP)
    _args.add_mesh_argument(p)


def command_line(args: argparse.Namespace, name: str = "compare") -> str:
    """The command that reproduces ``args`` (every setting spelled out), for the report."""
    words = ["scissorhands", name, "--out", args.out, "--setting", *args.setting, "--seeds"]
    words += [*map(str, args.seeds), *["--smoke"] * args.smoke]
    words += ["--data-dir", args.data_dir] if args.data_dir else []
    words += ["--methods", *args.methods, *(w for item in args.set for w in ("--set", item))]
    return shlex.join([*words, "--mia-feature", args.mia_feature])


def compare_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs the comparison ``args`` ask for and returns its rows (also ``scissorhands
    demo``'s)."""
    from scissorhands_jax.experiment.compare import run_compare
    from scissorhands_jax.parallel import resolve_mesh

    wanted = _set.parse_set(args.set, sections=CONFIG_SECTIONS)
    return run_compare(
        args.out,
        setting=args.setting,
        seeds=args.seeds,
        methods=args.methods,
        hyperparameters=wanted.methods,
        smoke=args.smoke,
        config_overrides=wanted.config,
        data_dir=args.data_dir,
        mia_feature=args.mia_feature,
        plot=not args.no_plot,
        command=command_line(args),
        overwrite=args.overwrite,
        progress=not args.no_progress,
        mesh=resolve_mesh(args.mesh),
    )


def run(args: argparse.Namespace) -> int:
    """Runs the comparison and prints where the report is."""
    rows = compare_rows(args)
    failed = sum("error" in r for r in rows)
    print(f"{len(rows)} rows ({failed} failed): {args.out}/results.json, results.csv, report.md")
    return 0
