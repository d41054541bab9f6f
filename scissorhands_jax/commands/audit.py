"""``scissorhands audit``: U-LiRA and the challenge's forgetting quality over a population."""

from __future__ import annotations

import argparse
from pathlib import Path

from scissorhands_jax.commands import _args

PROTOCOL_NAMES = ("digits_small", "digits_cnn_small", "digits10")
"""The installed protocols, ``scissorhands_jax/configs/audit_<name>.py`` (named here so
that parsing stays cheap; a test checks they agree)."""
PROTOCOL_HELP = (
    "audit protocol(s): digits_small (membership measurable, default), digits_cnn_small "
    "(the same on the digits CNN), digits10 (the comparison's models), or the path of a "
    "protocol config file (CONFIG with 'protocol' and 'methods' sections)"
)

VARIANT_NAMES = ("scissorhands_cal", "scissorhands_soft", "scissorhands_soft_cal")
"""The keys of ``scissorhands_jax.experiment.protocol.VARIANTS``: opt-in variants audited as
methods of their own (a test checks they agree)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands audit``."""
    from scissorhands_jax.commands.compare import METHOD_NAMES

    p = sub.add_parser(
        "audit",
        help="membership audit: U-LiRA and the NeurIPS-challenge forgetting quality per method",
        description="Trains K models on random halves of a digits pool, K retrains without a "
        "candidate forget set, runs every method on each model's forget request, and scores "
        "how well a per-example likelihood-ratio attack tells unlearned from retrained "
        "models. Writes OUT/audit.json, report.md and report.png; re-running with the same "
        "--out resumes.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--protocol", nargs="+", default=["digits_small"], help=PROTOCOL_HELP)
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("original", *METHOD_NAMES, *VARIANT_NAMES),
        help="default: all (with --quick: original, retrain, scissorhands, ft, ga, rl, salun)",
    )
    p.add_argument(
        "--shadows",
        type=_args.positive_int,
        help="models per protocol (even, at least 4; default 64, quick 16)",
    )
    p.add_argument("--quick", action="store_true", help="16 models and the cheaper methods")
    p.add_argument("--seed", type=_args.seed, default=0, help="in [0, 2**31) (default 0)")
    p.add_argument(
        "--backend", default="auto", choices=("auto", "vmap", "sequential"), help="population"
    )
    p.add_argument(
        "--settings",
        help="a settings.json of `scissorhands tune`: its methods run with the hyperparameters "
        "it chose (the others with the defaults); --seed must differ from its tuning seed",
    )
    p.add_argument("--no-plot", action="store_true", help="skip report.png")
    p.add_argument("--no-progress", action="store_true", help=_args.NO_PROGRESS_HELP)
    _args.add_mesh_argument(p)  # the methods run on the mesh; the populations use vmap


def run(args: argparse.Namespace) -> int:
    """Runs the audit and prints its report."""
    from scissorhands_jax.experiment.audit import run_audit
    from scissorhands_jax.parallel import resolve_mesh

    run_audit(
        out=args.out,
        protocols=args.protocol,
        methods=args.methods,
        shadows=args.shadows,
        quick=args.quick,
        seed=args.seed,
        backend=args.backend,
        plot=not args.no_plot,
        progress=not args.no_progress,
        command=_args.invocation(),
        settings=args.settings,
        mesh=resolve_mesh(args.mesh),  # the methods' steps; the populations use vmap
    )
    print((Path(args.out) / "report.md").read_text())
    return 0
