"""``scissorhands diffusion-unlearn``: forget the config's class in the trained DDPM."""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _args

METHODS = ("scissorhands", "scissorhands_anchor", "salun", "finetune")
"""The keys of :data:`scissorhands_jax.diffusion.DIFFUSION_METHODS`, spelled out so that
``--help`` imports no jax (a test checks they agree)."""
SD_METHODS = ("scissorhands", "esd", "salun")
"""The keys of :data:`scissorhands_jax.experiment._sd_setup.SD_METHODS` (an SD recipe
config's methods), likewise spelled out."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands diffusion-unlearn``."""
    p = sub.add_parser(
        "diffusion-unlearn",
        help="forget data.forget_class in the original DDPM of a diffusion-train run",
        description="Loads RUN/original (its EMA weights when kept), runs one unlearning "
        "method with the settings of its config section and saves the result, with its "
        "mask, as RUN/<method>/checkpoints and RUN/<method>/log.json (RTE, settings, losses).",
    )
    _args.add_common_arguments(p)
    p.add_argument("--run", required=True, help="the run directory of diffusion-train")
    p.add_argument(
        "--method",
        choices=[*METHODS, *(m for m in SD_METHODS if m not in METHODS)],
        default="scissorhands",
        help="scissorhands (L_r - lam L_f), scissorhands_anchor (the anchor recipe), salun, "
        "finetune; an SD recipe config: scissorhands, esd, salun (default: scissorhands)",
    )


def run(args: argparse.Namespace) -> int:
    """Unlearns with one method; returns 0."""
    from scissorhands_jax.experiment import generation, sd_pipeline
    from scissorhands_jax.parallel import resolve_mesh

    if sd_pipeline.is_sd_config(args.config):  # a Stable Diffusion recipe
        return sd_pipeline.unlearn_command(args)

    cfg = generation.load_generation_config(args.config, smoke=args.smoke, overrides=args.set,
                                            data_dir=args.data_dir)  # fmt: skip
    generation.unlearn_generator(cfg, args.run, args.method, mesh=resolve_mesh(args.mesh),
                                 progress=not args.no_progress)  # fmt: skip
    return 0
