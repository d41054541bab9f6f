"""``scissorhands diffusion-train``: the original DDPM, the retrain oracle and the judge."""

from __future__ import annotations

import argparse
from typing import Any

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
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument(
        "--only",
        choices=["original", "retrain", "classifier"],
        help="train only this model (default: all three)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoints in --out"
    )
    p.add_argument(
        "--until-step",
        type=int,
        metavar="K",
        help="stop each model after K steps in total (checkpointed; continue with --resume)",
    )


REQUEST_KEYS = ("data", "forget_class", "num_train", "num_retain", "num_forget", "image_shape")
"""What run.json records of the request: a run directory holds one request only."""


def _refuse_existing(run_dir, roles, resume: bool) -> None:
    from scissorhands_jax.commands import _diffusion as dif

    for role in roles:
        steps = dif.committed_steps(run_dir, role)
        if steps and not resume:
            raise ValueError(
                f"{run_dir / role / 'checkpoints'} already holds checkpoints (steps {steps}); "
                "pass --resume to continue that run, or choose another --out."
            )


def _fit(role, loss, state, source, ck, args, total, **schedule) -> tuple[int, int, Any, list]:
    """Continues ``role`` from its latest checkpoint in ``ck`` (if any) to ``total`` steps
    with :func:`~scissorhands_jax.resumable.fit_resumable`; ``(step, total, clock, log)``."""
    import jax

    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.experiment.pipeline import TrainingClock, check_saved
    from scissorhands_jax.loop import TrainState
    from scissorhands_jax.resumable import fit_resumable

    clock = TrainingClock()
    if ck.latest_step() is not None:
        tree, info = dif.restore(ck, state.tree())
        state = TrainState(ck.latest_step(), **tree)
        clock.resume(info, ck.directory.parent / "log.json")
        print(f"{role}: resuming from step {state.step} of {total}")
    if state.step >= total:
        return state.step, total, clock, []
    state, log = fit_resumable(loss, state, source, stop_step=args.until_step,
                               save=clock.saver(ck), progress=not args.no_progress, desc=role,
                               mesh=args.mesh, **schedule)  # fmt: skip
    ck.wait()
    jax.block_until_ready(state.params)
    check_saved(ck, state.step, role)
    return state.step, total, clock, log


def _train_generator(cfg, role, data, model, ck, args) -> tuple[int, int, Any, list]:
    import jax

    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.precision import with_precision

    section, source, tx, state, key = dif.generator_setup(cfg, role, data, model)
    loss = with_precision(model.loss, section["precision"])
    return _fit(role, loss, state, source, ck, args, section["steps"],
                key=jax.random.split(key, 3)[0],  # the data key of train_diffusion
                steps=section["steps"], tx=tx, lr=section["lr"], ema_decay=section["ema_decay"],
                save_every=section["checkpoint_every"], log_every=section["log_every"])  # fmt: skip


def _train_classifier(cfg, data, ck, args) -> tuple[int, int, Any, list]:
    from scissorhands_jax.commands import _diffusion as dif

    judge, _ = dif.build_judge(cfg, data)
    section, source, tx, state, key = dif.classifier_setup(cfg, data, judge)
    return _fit("classifier", judge.loss, state, source, ck, args,
                section["epochs"] * source.num_batches, key=key, epochs=section["epochs"], tx=tx,
                save_every=section["checkpoint_every"])  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Trains the requested models; returns 0 (75 when preempted, saved)."""
    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.experiment.rundir import run_directory
    from scissorhands_jax.parallel import resolve_mesh

    cfg = dif.config_from_args(args)  # every value checked before --out is created
    args.mesh = resolve_mesh(args.mesh)
    if args.until_step is not None and args.until_step < 1:
        raise ValueError(f"--until-step must be >= 1, got {args.until_step}.")
    with run_directory(args.out) as run_dir:  # one writer at a time
        return _train(args, cfg, run_dir)


def _train(args: argparse.Namespace, cfg: dict, run_dir) -> int:
    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.experiment.pipeline import append_training_log, read_json
    from scissorhands_jax.experiment.rundir import check_setting
    from scissorhands_jax.preemption import EXIT_PREEMPTED, PreemptionGuard, preemption_requested

    roles = [args.only] if args.only else list(dif.ROLES)
    _refuse_existing(run_dir, roles, args.resume)  # before any work
    for role in roles:  # a damaged log is refused now, not after the training
        read_json(run_dir / role / "log.json")
    data = dif.build_data(cfg, progress=not args.no_progress)
    model = dif.build_model(cfg, data)
    if "classifier" in roles:  # the judge trains last: refuse its setting before the DDPMs
        dif.build_judge(cfg, data)
    d = cfg["data"]
    request = {
        "data": d["name"],
        "forget_class": d["forget_class"],
        "num_train": len(data.indices("train")),
        "num_retain": len(data.indices("retain")),
        "num_forget": len(data.indices("forget")),
        "image_shape": list(data.image_shape),
        "config": cfg["config_path"],
        "smoke": cfg["smoke"],
    }
    check_setting(
        run_dir / "run.json",
        request,
        what="a diffusion run",
        fix="use the config that wrote it, or another --out",
        keys=REQUEST_KEYS,
    )
    print(
        f"{d['name']}: {request['num_train']} training images, class {d['forget_class']} to "
        f"forget ({request['num_forget']} images), generator at {tuple(data.image_shape)}"
    )
    for role in roles:
        with dif.checkpoints(run_dir, role, cfg, data) as ck, PreemptionGuard():
            if role == "classifier":
                step, total, clock, log = _train_classifier(cfg, data, ck, args)
            else:
                step, total, clock, log = _train_generator(cfg, role, data, model, ck, args)
            preempted = preemption_requested()
        seconds = clock.segment_s()
        if not log:
            print(f"{role}: at step {step} of {total}, nothing to do")
            continue
        section = cfg["classifier" if role == "classifier" else dif.GENERATORS[role][0]]
        append_training_log(
            run_dir / role / "log.json",
            role,
            step=step,
            total=total,
            seconds=seconds,
            elapsed=clock.elapsed_s(),
            segment={"log": log, "schedule": section},
        )
        done = "complete" if step >= total else "stopped; continue with --resume"
        print(
            f"{role}: step {step} of {total} ({done}) in {seconds:.1f} s, "
            f"loss {log[-1]['loss']:.4f}; {ck.directory}"
        )
        if preempted:
            print(f"{role}: preempted; saved at step {step}: rerun with --resume")
            return EXIT_PREEMPTED
    return 0
