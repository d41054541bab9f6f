"""Flags and argument types shared by the commands (argparse only: cheap to import); the
reading of ``--set`` is :mod:`scissorhands_jax.commands._set`."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from scissorhands_jax._choices import SEED_LIMIT, config_names


def _int_within(text: str, low: int, high: float, needs: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value < high:
        raise argparse.ArgumentTypeError(f"{needs}, got {text!r}")
    return value


def seed(text: str) -> int:
    """An argparse ``type``: a seed, an integer in ``[0, 2**31)``."""
    return _int_within(text, 0, SEED_LIMIT, "a seed is an integer in [0, 2**31)")


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    return _int_within(text, 1, float("inf"), "expected an integer >= 1")


NO_PROGRESS_HELP = "no progress bars and no per-epoch lines (warnings and errors still print)"


def add_mesh_argument(p: argparse.ArgumentParser) -> None:
    """``--mesh``: the devices a command runs data-parallel on."""
    p.add_argument(
        "--mesh",
        default="auto",
        metavar="auto|N",
        help="run data-parallel on every device (auto, the default) or on the first N; "
        "1 runs on one device",
    )


def add_common_arguments(p: argparse.ArgumentParser, *, mesh: bool = True) -> None:
    """``CONFIG``, ``--smoke``, ``--set``, ``--data-dir``, ``--no-progress`` and, with
    ``mesh``, ``--mesh``."""
    p.add_argument(
        "config", help=f"an installed config's name ({', '.join(config_names())}) or a config file"
    )
    p.add_argument("--smoke", action="store_true", help="merge the config's SMOKE (seconds)")
    add_set_argument(p)
    p.add_argument("--data-dir", help="data directory (overrides data.data_dir)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    if mesh:
        add_mesh_argument(p)


SET_HELP = (
    "override one config value, e.g. --set unlearn.lr=0.01, or one hyperparameter of a "
    "method, e.g. --set methods.ft.lr=0.02 (repeatable; values are Python literals or words)"
)


def add_set_argument(p: argparse.ArgumentParser, *, help: str = SET_HELP) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable): the one override flag of every command."""
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def add_training_arguments(p: argparse.ArgumentParser, roles: Sequence[str]) -> None:
    """``--out``, ``--only ROLE``, ``--resume`` and ``--until-step K`` of a command that
    trains the models ``roles`` into a run directory."""
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--only", choices=list(roles), help="train only this model (default: all)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoints in --out"
    )
    p.add_argument(
        "--until-step",
        type=int,
        metavar="K",
        help="stop each model after K steps in total (checkpointed; continue with --resume)",
    )


def invocation() -> str:
    """The command line this process was started with, quoted for a shell (for a report)."""
    return shlex.join(["scissorhands", *sys.argv[1:]])


def load_config(args: argparse.Namespace, command: str, *, runs: str | None = None) -> dict:
    """The classifier config of ``args`` (``config``, ``--smoke``, ``--set``, ``--data-dir``),
    complete and checked, for ``scissorhands COMMAND``, which runs the unlearning method
    ``runs`` (None: none); nothing is written before it returns.

    Raises:
      ValueError: a bad ``--set`` (:func:`~scissorhands_jax.commands._set.parse_set`), a
        hyperparameter of a method this command does not run, or a config the loader refuses.
    """
    from scissorhands_jax.commands._set import parse_set
    from scissorhands_jax.experiment.config import SCHEMAS
    from scissorhands_jax.experiment.config import load_config as load
    from scissorhands_jax.experiment.rules import METHOD_SECTION

    into = {"scissorhands": METHOD_SECTION["classifier"]}
    wanted = parse_set(args.set, sections=SCHEMAS["classifier"], method_sections=into)
    if wanted.methods:  # methods.scissorhands.* went into its section
        name, values = next(iter(wanted.methods.items()))
        does = f"runs {runs} only" if runs else "runs no unlearning method"
        raise ValueError(
            f"--set methods.{name}.{next(iter(values))}: scissorhands {command} {does}; "
            f"the other methods' hyperparameters are for scissorhands compare --methods {name}."
        )
    overrides = list(wanted.config)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir!r}")
    return load(args.config, smoke=args.smoke, overrides=overrides)
