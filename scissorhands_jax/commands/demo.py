"""``scissorhands demo``: the digits-10 protocol end to end (no download)."""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _legends


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands demo``."""
    from scissorhands_jax.demo import TRAIN_DEFAULTS, UNLEARN_DEFAULTS

    p = sub.add_parser(
        "demo",
        help="digits-10 end to end: original, retrain, Scissorhands; UA/RA/TA/MIA table",
        description="Trains the original and retrained models on scikit-learn's digits, "
        "runs Scissorhands and writes DIR/results.json (the digits-10 protocol).",
    )
    p.add_argument("--out", required=True, help="output directory for results.json")
    p.add_argument(
        "--scenarios", nargs="+", default=["random10", "class0"], choices=["random10", "class0"]
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--train-epochs", type=int, default=TRAIN_DEFAULTS["epochs"])
    p.add_argument("--train-lr", type=float, default=TRAIN_DEFAULTS["lr"])
    u = UNLEARN_DEFAULTS
    p.add_argument("--lr", type=float, default=u["lr"], help="repair learning rate")
    p.add_argument("--epochs", type=int, default=u["epochs"], help="repair epochs")
    p.add_argument(
        "--sparsity",
        type=float,
        default=u["sparsity"],
        help="fraction kept; 0.97 re-initialises the top 3%%",
    )
    p.add_argument("--lam", type=float, default=u["lam"], help="weight of the forget loss")
    p.add_argument("--batch-size", type=int, default=u["batch_size"])
    p.add_argument("--memory-num", type=int, default=u["memory_num"])
    p.add_argument("--prune-num", type=int, default=u["prune_num"])
    p.add_argument("--margin", type=float, default=u["margin"])
    p.add_argument("--eps", type=float, default=u["eps"])
    p.add_argument(
        "--projection",
        default=u["projection"],
        choices=["gem", "orthogonal", "orthogonal_on_conflict", "none"],
    )
    p.add_argument("--project-every", type=int, default=u["project_every"])
    p.add_argument("--reinit", default=u["reinit"], choices=["model", "torch"])
    p.add_argument(
        "--cumulative-memory",
        action="store_true",
        help="memory rows as running sums of the batch gradients, as the release computes "
        "them for --memory-num > 1",
    )
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Runs the digits-10 demo and writes ``results.json``."""
    from scissorhands_jax.demo import format_table, prepare_out_dir, run_digits, write_json_atomic

    out = prepare_out_dir(args.out)
    unlearn = {
        "lr": args.lr,
        "epochs": args.epochs,
        "sparsity": args.sparsity,
        "lam": args.lam,
        "batch_size": args.batch_size,
        "memory_num": args.memory_num,
        "prune_num": args.prune_num,
        "margin": args.margin,
        "eps": args.eps,
        "projection": args.projection,
        "project_every": args.project_every,
        "reinit": args.reinit,
    }
    if args.cumulative_memory:  # off by default: the demo's settings stay the protocol's
        unlearn["cumulative_memory"] = True
    train = {"epochs": args.train_epochs, "lr": args.train_lr}
    rows = run_digits(
        scenarios=args.scenarios,
        seeds=args.seeds,
        train=train,
        unlearn=unlearn,
        progress=not args.no_progress,
    )
    write_json_atomic(out / "results.json", rows)
    print(_legends.under(format_table(rows), _legends.CLASSIFIER))
    print(f"\nwrote {out / 'results.json'} ({len(rows)} rows)")
    return 0
