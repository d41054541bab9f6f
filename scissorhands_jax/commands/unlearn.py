"""``scissorhands unlearn``: Scissorhands on a trained original, with a config's settings."""

from __future__ import annotations

import argparse

from scissorhands_jax.commands import _args


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
    from scissorhands_jax.experiment.rundir import existing_run, run_directory
    from scissorhands_jax.experiment.unlearning import method_settings, unlearn_run
    from scissorhands_jax.parallel import resolve_mesh

    cfg = _args.load_config(args, "unlearn", runs="scissorhands")
    progress = not args.no_progress
    settings = method_settings(cfg, progress=progress)
    run = existing_run(args.run, maker=f"scissorhands train {args.config}")
    with run_directory(run, create=False) as run_dir:
        log = unlearn_run(cfg, run_dir, settings, progress=progress, mesh=resolve_mesh(args.mesh))
    last = {k: v for k, v in log["log"][-1].items() if k != "time_s"}
    print(
        f"unlearned in {log['rte_s']:.1f} s ({log['reinitialised']} of {log['parameters']} "
        f"parameters re-initialised); last epoch: {last}; saved {run_dir / 'unlearned'}"
    )
    return 0
