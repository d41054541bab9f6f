"""``scissorhands unlearn``: Scissorhands on a trained original, with a config's settings."""

from __future__ import annotations

import argparse
import time

from scissorhands_jax.commands import _args

# config keys of ``unlearn`` that are not keyword arguments of ``scissorhands()``
_NOT_METHOD_ARGS = ("seed", "augment")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands unlearn``."""
    p = sub.add_parser(
        "unlearn",
        help="run Scissorhands on the original model of a run",
        description="Loads RUN/original, unlearns the config's forget set with its unlearn "
        "settings and saves RUN/unlearned: the checkpoint (with the re-initialisation mask), "
        "the forget indices and log.json (per-epoch losses, RTE).",
    )
    _args.add_common_arguments(p)
    p.add_argument("--run", required=True, help="the run directory written by `train`")


def run(args: argparse.Namespace) -> int:
    """Unlearns and saves; returns 0."""
    from scissorhands_jax.experiment import pipeline as pipe
    from scissorhands_jax.experiment.rundir import existing_run, run_directory
    from scissorhands_jax.method import check_settings
    from scissorhands_jax.parallel import resolve_mesh

    cfg = pipe.config_from_args(args)
    flat = {k: v for k, v in cfg["unlearn"].items() if k not in _NOT_METHOD_ARGS}
    settings = check_settings(progress=not args.no_progress, **flat)
    mesh = resolve_mesh(args.mesh)
    run = existing_run(args.run, maker=f"scissorhands train {args.config}")
    with run_directory(run, create=False) as run_dir:
        return _unlearn(args, cfg, settings, mesh, run_dir)


def _unlearn(args: argparse.Namespace, cfg: dict, settings: dict, mesh, run_dir) -> int:
    import jax
    import numpy as np

    from scissorhands_jax.experiment import pipeline as pipe
    from scissorhands_jax.experiment.rundir import write_bytes_atomic, write_json_atomic
    from scissorhands_jax.method import scissorhands
    from scissorhands_jax.parallel import on_mesh

    split = pipe.build_split(cfg, progress=not args.no_progress)
    model = pipe.build_model(cfg, split.dataset)
    pipe.record_split(run_dir, split, cfg)  # refuses another request's run directory
    params, model_state = pipe.load_trained(run_dir, "original", cfg, split, model)
    if mesh is not None:  # placed once: the method runs where its parameters live
        params, model_state = on_mesh((params, model_state), mesh)
    ck = pipe.checkpoints(run_dir, "unlearned", cfg, split)
    try:
        if ck.latest_step() is not None:
            raise ValueError(
                f"{ck.directory} already holds an unlearned model; delete "
                f"{run_dir / 'unlearned'} to unlearn again."
            )
        u = cfg["unlearn"]
        print(
            f"unlearning {split.indices.forget.size} examples ({cfg['data']['forget']['kind']}) "
            f"from {run_dir / 'original'}"
        )
        start = time.perf_counter()
        result = scissorhands(
            model,
            params,
            model_state,
            retain=split.source("retain", u["batch_size"], augment=u["augment"]),
            forget=split.source("forget", u["batch_size"], augment=u["augment"]),
            key=jax.random.key(u["seed"]),
            eligible=u["eligible"],
            **settings,
        )
        jax.block_until_ready(result.params)
        seconds = time.perf_counter() - start
        tree = {"params": result.params, "model_state": result.model_state, "mask": result.mask}
        ck.save(u["epochs"], tree, info={"final": True})
        ck.wait()
        pipe.check_saved(ck, u["epochs"], "unlearned")
    finally:
        ck.close()  # waits until the asynchronous save is on disk
    out = run_dir / "unlearned"
    for name in ("forget_indices.npy", "val_indices.npy", "split.json"):
        write_bytes_atomic(out / name, (run_dir / name).read_bytes())
    masked = [np.asarray(m) for m in jax.tree.leaves(jax.device_get(result.mask))]
    reinit = int(sum(m.sum() for m in masked))
    total = int(sum(m.size for m in masked))
    log = {
        "rte_s": seconds,
        "rte_min": seconds / 60,
        "reinitialised": reinit,
        "reinitialised_fraction": reinit / total,
        "unlearn": u,
        "log": result.log,
    }
    write_json_atomic(out / "log.json", log)
    last = result.log[-1]
    print(
        f"unlearned in {seconds:.1f} s ({reinit} of {total} parameters re-initialised); "
        f"last epoch: { ({k: last[k] for k in last if k != 'time_s'}) }; saved {out}"
    )
    return 0
