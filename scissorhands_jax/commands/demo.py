"""``scissorhands demo``: the digits-10 protocol end to end (no download)."""

from __future__ import annotations

import argparse
import json

from scissorhands_jax.commands import _args, _legends


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``scissorhands demo`` (the settings' defaults are filled in by ``run``:
    reading them here would load jax for ``--help``)."""
    p = sub.add_parser(
        "demo",
        help="digits-10 end to end: original, retrain, Scissorhands; UA/RA/TA/MIA table",
        description="Trains the original and retrained models on scikit-learn's digits, "
        "runs Scissorhands and writes DIR/results.json (the digits-10 protocol).",
    )
    p.add_argument("--out", required=True, help="output directory for results.json")
    p.add_argument(
        "--scenarios", nargs="+", default=["random10", "class0"], choices=["random10", "class0"]
    )
    p.add_argument("--seeds", nargs="+", type=_args.seed, default=[0, 1, 2])
    p.add_argument("--train-epochs", type=int, default=None)
    p.add_argument("--train-lr", type=float, default=None)
    p.add_argument("--lr", type=float, default=None, help="repair learning rate")
    p.add_argument("--epochs", type=int, default=None, help="repair epochs")
    p.add_argument(
        "--sparsity",
        type=float,
        default=None,
        help="fraction kept; 0.97 re-initialises the top 3%%",
    )
    p.add_argument("--lam", type=float, default=None, help="weight of the forget loss")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--memory-num", type=int, default=None)
    p.add_argument("--prune-num", type=int, default=None)
    p.add_argument("--margin", type=float, default=None)
    p.add_argument("--eps", type=float, default=None)
    p.add_argument(
        "--projection",
        default=None,
        choices=["gem", "orthogonal", "orthogonal_on_conflict", "none"],
    )
    p.add_argument("--project-every", type=int, default=None)
    p.add_argument("--reinit", default=None, choices=["model", "torch"])
    p.add_argument(
        "--cumulative-memory",
        action="store_true",
        help="memory rows as running sums of the batch gradients, as the release computes "
        "them for --memory-num > 1",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the rows already in DIR/results.json (default: keep them and add the "
        "seeds and scenarios not there yet; their settings must match)",
    )
    p.add_argument("--no-progress", action="store_true", help=_args.NO_PROGRESS_HELP)
    _args.add_mesh_argument(p)


def run(args: argparse.Namespace) -> int:
    """Runs the digits-10 demo and writes ``results.json``: the rows already there are
    kept (same settings) and only the missing seeds and scenarios run."""
    from scissorhands_jax._versions import versions
    from scissorhands_jax.experiment.demo import (
        TRAIN_DEFAULTS,
        UNLEARN_DEFAULTS,
        check_digits_run,
        format_table,
        run_digits,
    )
    from scissorhands_jax.experiment.rundir import run_directory
    from scissorhands_jax.parallel import resolve_mesh

    for flag, key in (("train_epochs", "epochs"), ("train_lr", "lr")):
        if getattr(args, flag) is None:
            setattr(args, flag, TRAIN_DEFAULTS[key])
    for key, value in UNLEARN_DEFAULTS.items():
        if getattr(args, key, 0) is None:  # a flag left out
            setattr(args, key, value)
    mesh = resolve_mesh(args.mesh)

    unlearn = {
        "lr": args.lr,
        "epochs": args.epochs,
        "sparsity": args.sparsity,
        "lam": args.lam,
        "batch_size": args.batch_size,
        "memory_num": args.memory_num,
        "prune_num": args.prune_num,
        "margin": args.margin,
        "eps": args.eps,
        "projection": args.projection,
        "project_every": args.project_every,
        "reinit": args.reinit,
    }
    if args.cumulative_memory:  # off by default: the demo's settings stay the protocol's
        unlearn["cumulative_memory"] = True
    train = {"epochs": args.train_epochs, "lr": args.train_lr}
    train_cfg, shs_cfg = check_digits_run(args.scenarios, args.seeds, train, unlearn)
    setting = json.loads(json.dumps({"train": train_cfg, "unlearn": shs_cfg}))
    with run_directory(args.out) as out:  # one writer at a time
        rows = _kept_rows(out, setting, args.overwrite)
        kept = len(rows)
        for scenarios, seeds in _missing(rows, args.scenarios, args.seeds):
            new = run_digits(
                scenarios=scenarios,
                seeds=seeds,
                train=train,
                unlearn=unlearn,
                progress=not args.no_progress,
                mesh=mesh,
            )
            stack = versions()  # each row records what made it (kept rows keep their own)
            rows += [{**row, "versions": stack} for row in new]
            _write(out, setting, rows)
    print(_legends.under(format_table(rows), _legends.CLASSIFIER))
    extra = f"; {kept} kept from the earlier runs" if kept else ""
    print(f"\nwrote {out / 'results.json'} ({len(rows)} rows{extra})")
    return 0


def _write(out, setting: dict, rows: list) -> None:
    from scissorhands_jax.experiment.rundir import write_json_atomic

    write_json_atomic(out / "setting.json", setting)
    write_json_atomic(out / "results.json", rows)


def _kept_rows(out, setting: dict, overwrite: bool) -> list:
    """The rows of ``out/results.json`` to keep: all of them when they were made with
    ``setting``, none with ``overwrite``.

    Raises:
      ValueError: rows of other (or unrecorded) settings, without ``overwrite``.
    """
    from scissorhands_jax.experiment.rundir import check_setting, read_state

    results, saved = out / "results.json", out / "setting.json"
    if overwrite or not results.exists():
        return []
    fix = "pass --overwrite to replace the rows, or choose another --out"
    stored = read_state(saved, kind=dict, fix=fix)
    if stored is None:
        raise ValueError(
            f"{results} holds rows whose settings were not recorded; pass --overwrite to "
            "replace them, or choose another --out."
        )
    check_setting(
        saved,
        setting,
        what="demo rows",
        fix="run with the same settings to add seeds, pass --overwrite to replace the rows, "
        "or choose another --out",
        write=False,
    )
    return read_state(results, [], kind=list, fix=fix)


def _missing(rows: list, scenarios: list, seeds: list) -> list[tuple[list, list]]:
    """``[(scenarios, seeds)]`` still to run: per seed, the requested scenarios without
    their rows, seeds with the same missing scenarios grouped into one run."""
    done = {(r["scenario"], r["seed"]) for r in rows}
    groups: dict[tuple, list] = {}
    for seed in seeds:
        todo = tuple(s for s in scenarios if (s, seed) not in done)
        if todo:
            groups.setdefault(todo, []).append(seed)
    return [(list(todo), group) for todo, group in groups.items()]
