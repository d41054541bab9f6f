"""``scissorhands compare``: every method on the same forget requests, with a report."""

from __future__ import annotations

import argparse
import ast
import shlex
from typing import Any

from scissorhands_jax._choices import METHOD_NAMES
from scissorhands_jax.commands import _args

MIA_CHOICES = ("correctness", "confidence", "entropy", "modified_entropy", "probabilities", "loss")
"""The MIA features the Avg. Gap can use: the five SVC features and the loss attack."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands compare``."""
    p = sub.add_parser(
        "compare",
        help="all unlearning methods on digits-10 or a config: results.json/csv, report.md/png",
        description="Trains (or loads) one original and one retrain per seed, runs every "
        "requested method on the same forget set and writes OUT/results.json (one row per "
        "method x seed), results.csv, report.md and report.png. Re-running with the same "
        "--out resumes: finished rows and trained models (or their last checkpoints) are "
        "reused, and finished rows of other hyperparameters are kept unless --overwrite. "
        "--setting is digits10 (default) or an experiment config (a name or a file).",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--setting",
        default="digits10",
        metavar="digits10|CONFIG",
        help="digits10 (the digits-10 protocol, both scenarios) or a config: an installed "
        "config's name (e.g. digits10_class0, cifar10_random10) or a config file (its data, "
        "model, request and schedules)",
    )
    p.add_argument(
        "--scenarios",
        nargs="+",
        choices=["random10", "class0"],
        help="digits10 only (default: both); a config's request is its own",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=_args.seed,
        help="default: 0 1 2 3 4 for digits10, 0 for a config (each in [0, 2**31))",
    )
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument(
        "--train-epochs",
        type=_args.positive_int,
        help="digits10: epochs of the original and Retrain (>= 1)",
    )
    p.add_argument(
        "--train-lr", type=_args.positive_float, help="digits10: lr of the original and Retrain"
    )
    p.add_argument("--smoke", action="store_true", help="a config: merge its SMOKE section")
    p.add_argument("--data-dir", help="a config: its data directory (data.data_dir)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.NAME=VALUE",
        help="override a method's hyperparameter, e.g. --set ft.lr=0.02; with a config also "
        "SECTION.KEY=VALUE for the config (data, model, train, retrain, unlearn, eval), "
        "e.g. --set train.epochs=2",
    )
    p.add_argument(
        "--mia-feature", default="entropy", choices=MIA_CHOICES, help="the MIA in the Avg. Gap"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace finished rows that were made with other hyperparameters",
    )
    p.add_argument("--no-plot", action="store_true", help="skip report.png (no matplotlib)")
    p.add_argument("--no-progress", action="store_true", help=_args.NO_PROGRESS_HELP)
    _args.add_mesh_argument(p)


CONFIG_SECTIONS = ("data", "model", "train", "retrain", "unlearn", "eval")
"""``--set`` targets that are config sections, not methods."""


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """``--set`` items into ``(config overrides, method overrides)`` by their first word."""
    config = [i for i in items if i.partition(".")[0] in CONFIG_SECTIONS]
    return config, [i for i in items if i not in config]


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["ft.lr=0.02", "be.head=Dense_1"]`` -> ``{"ft": {"lr": 0.02}, "be": {"head":
    "Dense_1"}}``; values are Python literals where they parse, strings otherwise.

    Raises:
      ValueError: an item not of the form ``METHOD.NAME=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, text = item.partition("=")
        method, dot, name = target.partition(".")
        if not sep or not dot or not method or not name:
            raise ValueError(f"--set {item!r}: expected METHOD.NAME=VALUE, e.g. ft.lr=0.02.")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(method, {})[name] = value
    return out


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces ``args`` (every setting spelled out), for the report."""
    words = ["scissorhands", "compare", "--out", args.out, "--setting", args.setting]
    if args.scenarios:
        words += ["--scenarios", *args.scenarios]
    if args.seeds:
        words += ["--seeds", *map(str, args.seeds)]
    if args.smoke:
        words += ["--smoke"]
    if args.data_dir:
        words += ["--data-dir", args.data_dir]
    words += ["--methods", *args.methods]
    if args.train_epochs is not None:
        words += ["--train-epochs", str(args.train_epochs)]
    if args.train_lr is not None:
        words += ["--train-lr", str(args.train_lr)]
    for item in args.set:
        words += ["--set", item]
    words += ["--mia-feature", args.mia_feature]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    """Runs the comparison and prints where the report is."""
    from scissorhands_jax.experiment.compare import run_compare
    from scissorhands_jax.parallel import resolve_mesh

    train = {}
    if args.train_epochs is not None:
        train["epochs"] = args.train_epochs
    if args.train_lr is not None:
        train["lr"] = args.train_lr
    config_items, method_items = split_overrides(args.set)
    if config_items and args.setting == "digits10":
        raise ValueError(
            f"--set {config_items[0]}: config sections need a config --setting; digits10 "
            "takes --train-epochs / --train-lr and METHOD.NAME=VALUE."
        )
    rows = run_compare(
        args.out,
        setting=args.setting,
        scenarios=args.scenarios,
        seeds=args.seeds,
        methods=args.methods,
        train=train,
        hyperparameters=parse_overrides(method_items),
        smoke=args.smoke,
        config_overrides=config_items,
        data_dir=args.data_dir,
        mia_feature=args.mia_feature,
        plot=not args.no_plot,
        command=command_line(args),
        overwrite=args.overwrite,
        progress=not args.no_progress,
        mesh=resolve_mesh(args.mesh),
    )
    failed = sum("error" in r for r in rows)
    print(f"{len(rows)} rows ({failed} failed): {args.out}/results.json, results.csv, report.md")
    return 0
