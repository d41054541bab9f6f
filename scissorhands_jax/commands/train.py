"""``scissorhands train``: the original model and the retrained oracle of a config."""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands train``."""
    p = sub.add_parser(
        "train",
        help="train the original (retain + forget) and the retrained oracle (retain only)",
        description="Trains the original model on the whole training pool and the retrained "
        "oracle on the retain set with the config's schedules, checkpointing every "
        "train.checkpoint_every steps and at the end; saves the forget indices in --out.",
    )
    _args.add_common_arguments(p)
    _args.add_training_arguments(p, ("original", "retrain"))


def run(args: argparse.Namespace) -> int:
    """Trains the requested models; returns 0 (75 when preempted, saved)."""
    from scissorhands_jax.experiment.rundir import run_directory
    from scissorhands_jax.parallel import resolve_mesh

    cfg = _args.load_config(args, "train")  # every value checked before --out is created
    mesh = resolve_mesh(args.mesh)
    if args.until_step is not None and args.until_step < 1:
        raise ValueError(f"--until-step must be >= 1, got {args.until_step}.")
    with run_directory(args.out) as run_dir:  # one writer at a time
        return _train(args, cfg, run_dir, mesh)


def _train(args: argparse.Namespace, cfg: dict, run_dir, mesh) -> int:
    from scissorhands_jax._preemption import EXIT_PREEMPTED, PreemptionGuard, preemption_requested
    from scissorhands_jax.experiment import pipeline as pipe

    progress = not args.no_progress
    split = pipe.build_split(cfg, progress=progress)
    model = pipe.build_model(cfg, split.dataset)  # refuses a model the labels do not fit
    roles = [args.only] if args.only else list(pipe.ROLES)
    stores = {role: pipe.checkpoints(run_dir, role, cfg, split) for role in roles}
    try:
        for ck in stores.values():  # refuse before any work is done
            if ck.latest_step() is not None and not args.resume:
                raise ValueError(
                    f"{ck.directory} already holds checkpoints (steps {ck.steps()}); pass --resume "
                    "to continue that run, or choose another --out."
                )
        pipe.record_split(run_dir, split, cfg)
        ix = split.indices
        print(
            f"{cfg['data']['name']}: {ix.num_train} training examples, {ix.val.size} validation, "
            f"{ix.forget.size} forget, {ix.retain.size} retain; indices in {run_dir}"
        )
        for role, ck in stores.items():
            with PreemptionGuard():  # SIGTERM: save at the next step, exit for a requeue
                pipe.train_role(run_dir, role, cfg, split, model, ck, until_step=args.until_step,
                                progress=progress, mesh=mesh)  # fmt: skip
                if preemption_requested():
                    print(f"{role}: preempted and saved; rerun with --resume to continue")
                    return EXIT_PREEMPTED
    finally:
        for ck in stores.values():
            ck.close()
    return 0
