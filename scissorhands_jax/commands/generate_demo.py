"""``scissorhands generate-demo``: forget a digit class in a small class-conditional DDPM."""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _args, _legends


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands generate-demo``."""
    p = sub.add_parser(
        "generate-demo",
        help="digits DDPM: train, forget one class with Scissorhands and baselines, write "
        "metrics.json and before/after PNG grids",
        description="Trains a small class-conditional DDPM and a judging classifier on "
        "scikit-learn's digits, forgets one class (Scissorhands, its anchor variant, FT, "
        "SalUn, Retrain) and writes DIR/metrics.json, PNG sample grids and orbax "
        "checkpoints (a few minutes on a 2-core CPU).",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--forget-class", type=int, default=0, help="the digit to forget")
    p.add_argument("--seed", type=_args.seed, default=0)
    p.add_argument("--image-size", type=int, default=8, choices=[8, 16])
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="subset of: scissorhands scissorhands_anchor scissorhands_trim_only finetune "
        "salun retrain (default: all)",
    )
    p.add_argument("--train-steps", type=int, default=None, help="DDPM training steps")
    p.add_argument(
        "--repair-steps",
        type=int,
        default=None,
        help="steps of every unlearning method but Retrain (equal budget)",
    )
    p.add_argument("--unet-ch", type=int, default=None, help="UNet base channels")
    p.add_argument("--classifier-epochs", type=int, default=None)
    p.add_argument("--sparsity", type=float, default=None, help="fraction of weights kept")
    p.add_argument("--lam", type=float, default=None, help="λ of L_r − λ·L_f")
    p.add_argument(
        "--projection",
        default=None,
        choices=["none", "gem", "orthogonal", "orthogonal_on_conflict"],
        help="forget-memory projection in Scissorhands' repair (default: none, as the release)",
    )
    p.add_argument("--guidance", type=float, default=None, help="sampling guidance scale s")
    p.add_argument("--per-class", type=int, default=None, help="samples per class for metrics")
    p.add_argument(
        "--fid-features",
        default=None,
        metavar="MODULE:FUNCTION",
        help="an importable features(images in [0, 1], NHWC) -> (N, D) function: adds a "
        "Fréchet distance in its features to every row",
    )
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="NPZ",
        help="weights of the FID Inception-v3 (python -m "
        "scissorhands_jax.diffusion.convert_inception): adds the standard FID to every row",
    )
    p.add_argument("--no-progress", action="store_true", help=_args.NO_PROGRESS_HELP)
    _args.add_mesh_argument(p)  # training and unlearning; sampling runs on one device


def run(args: argparse.Namespace) -> int:
    """Runs the generation demo and prints its table."""
    from scissorhands_jax.commands.diffusion_evaluate import feature_function
    from scissorhands_jax.diffusion.demo import METHODS, format_rows, run_generate_demo
    from scissorhands_jax.experiment.rundir import run_directory
    from scissorhands_jax.parallel import resolve_mesh

    overrides: dict = {"forget_class": args.forget_class, "seed": args.seed}
    overrides["image_size"] = args.image_size
    unet = {"ch_mult": (1, 2, 2), "attn_resolutions": (4,)} if args.image_size == 16 else {}
    if args.unet_ch is not None:
        unet["ch"] = args.unet_ch
    if unet:
        overrides["unet"] = unet
    if args.classifier_epochs is not None:
        overrides["classifier"] = {"epochs": args.classifier_epochs}
    if args.train_steps is not None:
        overrides["train"] = {"steps": args.train_steps}
        overrides["retrain"] = {"steps": args.train_steps}
    if args.repair_steps is not None:
        for name in ("scissorhands_anchor", "finetune", "salun"):
            overrides[name] = {"steps": args.repair_steps}
    shs = {}
    for key, value in (
        ("steps", args.repair_steps),
        ("sparsity", args.sparsity),
        ("lam", args.lam),
        ("projection", args.projection),
    ):
        if value is not None:
            shs[key] = value
    if shs:
        overrides["scissorhands"] = shs
    sample = {}
    if args.guidance is not None:
        sample["guidance_scale"] = args.guidance
    if args.per_class is not None:
        sample["per_class"] = args.per_class
    if sample:
        overrides["sample"] = sample
    fid_features = feature_function(args.fid_features, args.inception_weights)
    mesh = resolve_mesh(args.mesh)
    with run_directory(args.out):  # one writer at a time
        payload = run_generate_demo(
            args.out,
            mesh=mesh,
            fid_features=fid_features,
            overrides=overrides,
            methods=tuple(args.methods) if args.methods else METHODS,
            progress=not args.no_progress,
        )
    print(_legends.under(format_rows(payload["rows"]), _legends.DIFFUSION))
    print(f"\nwrote {args.out}/metrics.json and {', '.join(payload['files'])}")
    print(f"total {payload['timing']['total_s']:.1f} s")
    return 0
