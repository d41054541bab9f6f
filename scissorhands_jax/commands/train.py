"""``scissorhands train``: the original model and the retrained oracle of a config."""

from __future__ import annotations

import argparse
import time

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
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument(
        "--only", choices=["original", "retrain"], help="train only this model (default: both)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --out"
    )
    p.add_argument(
        "--until-step",
        type=int,
        metavar="K",
        help="stop each model after K steps in total (checkpointed; continue with --resume)",
    )


def run(args: argparse.Namespace) -> int:
    """Trains the requested models; returns 0."""
    from scissorhands_jax.commands import _pipeline as pipe
    from scissorhands_jax.demo import prepare_out_dir, write_json_atomic
    from scissorhands_jax.resumable import TrainState, fit_resumable

    cfg = pipe.config_from_args(args)
    progress = not args.no_progress
    run_dir = prepare_out_dir(args.out)
    split = pipe.build_split(cfg, progress=progress)
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
        model = pipe.build_model(cfg, split.dataset)
        ix = split.indices
        print(
            f"{cfg['data']['name']}: {ix.num_train} training examples, {ix.val.size} validation, "
            f"{ix.forget.size} forget, {ix.retain.size} retain; indices in {run_dir}"
        )
        for role, ck in stores.items():
            section, source, tx, state, data_key = pipe.role_setup(cfg, role, split, model)
            total = section["epochs"] * source.num_batches
            if ck.latest_step() is not None:
                tree, _ = ck.restore(state.tree())
                state = TrainState(ck.latest_step(), **tree)
                print(f"{role}: resuming from step {state.step} of {total}")
            if state.step >= total:
                print(f"{role}: already complete ({total} steps)")
                ck.close()
                continue
            start = time.perf_counter()
            try:
                state, log = fit_resumable(
                    model.loss,
                    state,
                    source,
                    key=data_key,
                    epochs=section["epochs"],
                    tx=tx,
                    stop_step=args.until_step,
                    save=lambda s, info, ck=ck: ck.save(s.step, s.tree(), info=info),
                    save_every=section["checkpoint_every"],
                    progress=progress,
                    desc=role,
                )
            finally:
                ck.close()  # waits until every asynchronous save is on disk
            seconds = time.perf_counter() - start
            log_path = run_dir / role / "log.json"
            record = pipe.read_json(log_path, {"role": role, "segments": []})
            record["segments"].append(
                {"to_step": state.step, "time_s": seconds, "epochs": log, "schedule": section}
            )
            record.update(
                total_steps=total,
                step=state.step,
                complete=state.step >= total,
                train_time_s=sum(s["time_s"] for s in record["segments"]),
            )
            write_json_atomic(log_path, record)
            done = "complete" if state.step >= total else "stopped; continue with --resume"
            loss = log[-1]["loss"] if log else float("nan")
            print(
                f"{role}: step {state.step} of {total} ({done}) in {seconds:.1f} s, "
                f"loss {loss:.4f}; {ck.directory}"
            )
    finally:
        for ck in stores.values():
            ck.close()
    return 0
