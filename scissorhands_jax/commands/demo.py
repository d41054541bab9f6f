"""``scissorhands demo``: the digits-10 protocol end to end (no download), an alias of
``scissorhands compare --setting digits10_random10 digits10_class0 --methods retrain
scissorhands --seeds 0 1 2``."""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _args, _legends, compare

REMOVED = ("lr", "epochs", "sparsity", "lam", "batch-size", "memory-num", "prune-num", "margin")
REMOVED += ("eps", "projection", "project-every", "reinit", "cumulative-memory")
REMOVED += ("train-epochs", "train-lr")
"""The flags of the earlier demo, now config values: each is refused with its ``--set``."""


class _Removed(argparse.Action):
    """Refuses a flag of the earlier demo, naming the ``--set`` that replaces it."""

    def __call__(self, parser, namespace, values, option_string=None):
        key = option_string[2:].replace("-", "_")
        fix = f"--set unlearn.{key}=VALUE"
        if key.startswith("train_"):
            fix = f"--set train.{key[6:]}=VALUE --set retrain.{key[6:]}=VALUE"
        raise argparse.ArgumentError(self, f"removed: the demo runs the digits configs; {fix}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands demo``."""
    p = sub.add_parser(
        "demo",
        help="digits-10 end to end: original, retrain, Scissorhands; UA/RA/TA/MIA table",
        description="Runs the two digits-10 configs (scikit-learn's digits) through "
        "scissorhands compare with Retrain and Scissorhands, prints the table and writes "
        "DIR/results.json; rerun into DIR to add seeds.",
    )
    p.add_argument("--out", required=True, help="output directory for results.json")
    p.add_argument("--scenarios", nargs="+", default=["random10", "class0"],
                   choices=["random10", "class0"], help="digits10_<scenario> configs")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=_args.seed, default=[0, 1, 2])
    p.add_argument("--smoke", action="store_true", help="merge the configs' SMOKE sections")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set unlearn.lr=0.01")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace rows of DIR/results.json made with other settings")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help=_args.NO_PROGRESS_HELP)
    for flag in REMOVED:
        p.add_argument(f"--{flag}", nargs="?", action=_Removed, help=argparse.SUPPRESS)
    _args.add_mesh_argument(p)


def run(args: argparse.Namespace) -> int:
    """Runs the comparison of the digits-10 configs and prints its table."""
    from scissorhands_jax.experiment.compare import results_tables

    args.setting = [f"digits10_{s}" for s in args.scenarios]
    args.methods, args.data_dir, args.mia_feature = ["retrain", "scissorhands"], None, "entropy"
    args.no_plot = True
    rows = compare.compare_rows(args)
    print(_legends.under(results_tables(rows), _legends.CLASSIFIER))
    print(f"\nwrote {args.out}/results.json ({len(rows)} rows)")
    return 0
