"""Flags shared by ``train``, ``unlearn`` and ``evaluate`` (argparse only: cheap to import)."""

from __future__ import annotations

import argparse
import math

from scissorhands_jax._choices import SEED_LIMIT


def seed(text: str) -> int:
    """An argparse ``type``: a seed, an integer in ``[0, 2**31)``."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed is an integer in [0, 2**31), got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


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
        "config", help="an installed config's name (e.g. cifar10_random10) or a config file"
    )
    p.add_argument("--smoke", action="store_true", help="merge the config's SMOKE (seconds)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set unlearn.lr=0.01 (repeatable)",
    )
    p.add_argument("--data-dir", help="data directory (overrides data.data_dir)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    if mesh:
        add_mesh_argument(p)
