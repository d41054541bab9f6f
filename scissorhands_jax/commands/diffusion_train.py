"""``scissorhands diffusion-train``: the original DDPM, the retrain oracle and the judge."""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands diffusion-train``."""
    p = sub.add_parser(
        "diffusion-train",
        help="train the original DDPM (all classes), the retrain oracle (without the forget "
        "class) and the judge classifier of a diffusion config",
        description="Trains the class-conditional DDPM on every class (original), on every "
        "class but data.forget_class (retrain) and the classifier that judges samples "
        "(classifier), checkpointing each every checkpoint_every steps and at the end "
        "(with the EMA of the weights when train.ema_decay is set). --resume continues "
        "to the same bits as an uninterrupted run.",
    )
    _args.add_common_arguments(p)
    _args.add_training_arguments(p, ("original", "retrain", "classifier"))


def run(args: argparse.Namespace) -> int:
    """Trains the requested models; returns 0 (75 when preempted, saved)."""
    from scissorhands_jax.experiment import generation, sd_pipeline
    from scissorhands_jax.parallel import resolve_mesh

    if sd_pipeline.is_sd_config(args.config):  # a Stable Diffusion recipe
        return sd_pipeline.train_command(args)

    cfg = generation.load_generation_config(args.config, smoke=args.smoke, overrides=args.set,
                                            data_dir=args.data_dir)  # fmt: skip
    return generation.train_generators(cfg, args.out, only=args.only, resume=args.resume,
                                       until_step=args.until_step, mesh=resolve_mesh(args.mesh),
                                       progress=not args.no_progress)  # fmt: skip
