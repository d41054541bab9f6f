"""The ``scissorhands`` command line: thin, it parses flags and calls the library.

Each subcommand is a module of :mod:`scissorhands_jax.commands` with ``add_parser(sub)``
(cheap: no heavy imports) and ``run(args) -> exit code``; :data:`COMMANDS` lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "audit": "scissorhands_jax.commands.audit",
    "compare": "scissorhands_jax.commands.compare",
    "demo": "scissorhands_jax.commands.demo",
    "diffusion-evaluate": "scissorhands_jax.commands.diffusion_evaluate",
    "diffusion-train": "scissorhands_jax.commands.diffusion_train",
    "diffusion-unlearn": "scissorhands_jax.commands.diffusion_unlearn",
    "evaluate": "scissorhands_jax.commands.evaluate",
    "generate-demo": "scissorhands_jax.commands.generate_demo",
    "prepare": "scissorhands_jax.commands.prepare",
    "train": "scissorhands_jax.commands.train",
    "unlearn": "scissorhands_jax.commands.unlearn",
}
"""Subcommand name -> module implementing it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scissorhands`` console script."""
    parser = argparse.ArgumentParser(prog="scissorhands", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {name: importlib.import_module(path) for name, path in COMMANDS.items()}
    for module in modules.values():
        module.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return modules[args.command].run(args)
    except (ValueError, FloatingPointError, OSError) as err:
        print(f"scissorhands {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
