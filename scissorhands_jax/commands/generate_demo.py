"""``scissorhands generate-demo``: the ``digits_ddpm_class0`` config, start to end.

An alias: ``diffusion-train``, ``diffusion-unlearn`` for each method and
``diffusion-evaluate`` on the installed config ``digits_ddpm_class0`` into ``--out``.
"""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _args, _legends
from scissorhands_jax.commands.diffusion_unlearn import METHODS

CONFIG = "digits_ddpm_class0"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands generate-demo``."""
    p = sub.add_parser(
        "generate-demo",
        help="digits DDPM: train, forget one class with Scissorhands and baselines, write "
        "evaluation.json and before/after PNG grids",
        description=f"Runs diffusion-train, diffusion-unlearn for each method and "
        f"diffusion-evaluate on the config {CONFIG} (scikit-learn's digits, no download) "
        "into --out: a small class-conditional DDPM, its retrain oracle and a judge "
        "classifier; digit 0 forgotten by Scissorhands (both recipes), SalUn and FT "
        "(a few minutes on a 2-core CPU).",
    )
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--forget-class", type=int, default=None, help="the digit to forget (0)")
    p.add_argument(
        "--seed", type=_args.seed, default=None, help="the seed of every model and sample (0)"
    )
    p.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="(default: all)"
    )
    p.add_argument("--smoke", action="store_true", help="the config's SMOKE (seconds)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set scissorhands.projection=gem (repeatable)",
    )
    p.add_argument("--fid-features", default=None, metavar="MODULE:FUNCTION",
                   help="as for diffusion-evaluate")  # fmt: skip
    p.add_argument("--inception-weights", default=None, metavar="NPZ",
                   help="as for diffusion-evaluate")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help=_args.NO_PROGRESS_HELP)
    _args.add_mesh_argument(p)  # training and unlearning; sampling runs on one device


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` items of the flags (``--forget-class``, ``--seed``), then ``--set``."""
    out = [] if args.forget_class is None else [f"data.forget_class={args.forget_class}"]
    if args.seed is not None:
        sections = ("train", "retrain", "classifier", "sample", *METHODS)
        out += [f"{section}.seed={args.seed}" for section in sections]
    return out + list(args.set)


def run(args: argparse.Namespace) -> int:
    """Trains, unlearns with each method, evaluates and prints the table; returns 0."""
    from scissorhands_jax.commands.diffusion_evaluate import feature_function
    from scissorhands_jax.experiment import generation
    from scissorhands_jax.parallel import resolve_mesh

    cfg = generation.load_generation_config(CONFIG, smoke=args.smoke, overrides=overrides(args))
    fid = feature_function(args.fid_features, args.inception_weights)
    mesh, progress = resolve_mesh(args.mesh), not args.no_progress
    code = generation.train_generators(cfg, args.out, mesh=mesh, progress=progress)
    if code:
        return code
    for method in args.methods:
        generation.unlearn_generator(cfg, args.out, method, mesh=mesh, progress=progress)
    payload = generation.evaluate_generators(cfg, args.out, fid_features=fid, progress=progress)
    print(_legends.under(generation.format_rows(payload["rows"]), _legends.DIFFUSION))
    print(f"\nwrote {args.out}/evaluation.json and {', '.join(payload['files'])}")
    return 0
