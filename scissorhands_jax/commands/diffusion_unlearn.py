"""``scissorhands diffusion-unlearn``: forget the config's class in the trained DDPM."""

from __future__ import annotations

import argparse
import time

from scissorhands_jax.commands import _args

METHODS = ("scissorhands", "scissorhands_anchor", "salun", "finetune")


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
        choices=METHODS,
        default="scissorhands",
        help="scissorhands (L_r - lam L_f), scissorhands_anchor (the anchor recipe), salun, "
        "finetune (default: scissorhands)",
    )


def run(args: argparse.Namespace) -> int:
    """Unlearns with one method; returns 0."""

    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.experiment.rundir import existing_run, run_directory

    cfg = dif.config_from_args(args)
    maker = f"scissorhands diffusion-train {cfg['config_path']}"
    run_dir = existing_run(args.run, maker=maker, kind="DDPM")
    with run_directory(run_dir, create=False):  # one writer at a time
        return _unlearn(args, cfg, run_dir)


def _unlearn(args: argparse.Namespace, cfg: dict, run_dir) -> int:
    import jax
    import numpy as np

    from scissorhands_jax.commands import _diffusion as dif
    from scissorhands_jax.experiment.pipeline import check_saved
    from scissorhands_jax.experiment.rundir import write_json_atomic
    from scissorhands_jax.parallel import on_mesh, resolve_mesh

    method = args.method
    if dif.committed_steps(run_dir, method):
        raise ValueError(
            f"{run_dir / method} already holds an unlearned model; delete it to unlearn again."
        )
    section = cfg[method]
    settings = {k: v for k, v in section.items() if k not in dif.PIPELINE_KEYS["method"]}
    data = dif.build_data(cfg, progress=not args.no_progress)
    model = dif.build_model(cfg, data)
    params = dif.load_generator(run_dir, "original", cfg, data, model)
    mesh = resolve_mesh(args.mesh)
    if mesh is not None:  # placed once: the method runs where its parameters live
        params = on_mesh(params, mesh)
    print(
        f"{method}: forgetting class {data.forget_class} ({len(data.indices('forget'))} "
        f"images) in {run_dir / 'original'}"
    )
    with dif.checkpoints(run_dir, method, cfg, data) as ck:
        start = time.perf_counter()
        new, mask, log = dif.unlearn(
            method,
            model,
            params,
            data,
            settings,
            key=jax.random.key(section["seed"]),
            progress=not args.no_progress,
        )
        jax.block_until_ready(new)
        seconds = time.perf_counter() - start
        tree = {"params": new} if mask is None else {"params": new, "mask": mask}
        ck.save(section["steps"], tree, info={"final": True})
        ck.wait()
        check_saved(ck, section["steps"], method)
    record = {"method": method, "rte_s": seconds, "rte_min": seconds / 60, "settings": section}
    if mask is not None:
        masked = [np.asarray(m) for m in jax.tree.leaves(jax.device_get(mask))]
        record["mask_entries"] = int(sum(m.sum() for m in masked))
        record["mask_fraction"] = record["mask_entries"] / int(sum(m.size for m in masked))
    record["log"] = log
    write_json_atomic(run_dir / method / "log.json", record)
    losses = {k: v for k, v in log[-1].items() if k.startswith("loss")} if log else {}
    print(f"{method}: done in {seconds:.1f} s; last {losses}; saved {run_dir / method}")
    return 0
