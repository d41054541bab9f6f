"""The ``scissorhands`` command line: thin, it parses flags and calls the library.

Each subcommand is a module of :mod:`scissorhands_jax.commands` with ``add_parser(sub)``
(cheap: no heavy imports) and ``run(args) -> exit code``; :data:`COMMANDS` lists them.

The command line (never the library) turns on JAX's persistent compilation cache, so a
second run of a command loads its compiled programs instead of compiling them again:
the directory is ``$SCISSORHANDS_CACHE`` if set, else ``$XDG_CACHE_HOME/scissorhands_jax/xla``
(``~/.cache/scissorhands_jax/xla``); ``SCISSORHANDS_CACHE=off`` turns it off, and a cache
directory already chosen through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is kept. JAX
writes its entries in place, so concurrent jobs should each have their own directory
(``docs/performance.md``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

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


def compilation_cache_dir() -> str | None:
    """The persistent compilation cache directory the command line uses (None: off)."""
    chosen = os.environ.get("SCISSORHANDS_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "scissorhands_jax", "xla")


def enable_compilation_cache() -> str | None:
    """Points JAX's persistent compilation cache at :func:`compilation_cache_dir` and
    caches every program, however quick to compile; returns the directory in use."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return jax.config.jax_compilation_cache_dir
    directory = compilation_cache_dir()
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory


class _MainProcessOnly(logging.Filter):
    """Lets records through on process 0 only (every process of a multi-host job runs
    the same command; one of them speaks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        import jax

        return record.levelno >= logging.WARNING or jax.process_index() == 0


def configure_output(args: argparse.Namespace) -> logging.Handler:
    """The command line's output for people: the package's INFO lines (one per epoch or
    log window of every training loop) on stdout, on process 0 only; progress bars only
    where stderr is a terminal (a log file or a pipe gets the lines, not the bars).
    ``--no-progress`` silences both: no bars and no per-epoch lines, only warnings and
    errors. Returns the handler it installed on the ``scissorhands_jax`` logger."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_MainProcessOnly())
    package = logging.getLogger("scissorhands_jax")
    package.addHandler(handler)
    quiet = getattr(args, "no_progress", False)  # asked for, not set below for a log file
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.propagate = False
    if hasattr(args, "no_progress") and not sys.stderr.isatty():
        args.no_progress = True
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scissorhands`` console script."""
    enable_compilation_cache()
    parser = argparse.ArgumentParser(prog="scissorhands", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {name: importlib.import_module(path) for name, path in COMMANDS.items()}
    for module in modules.values():
        module.add_parser(sub)
    args = parser.parse_args(argv)
    package = logging.getLogger("scissorhands_jax")
    saved = package.level, package.propagate
    handler = configure_output(args)
    try:
        with logging_redirect_tqdm(loggers=[package]):  # lines above the bars, not in them
            return modules[args.command].run(args)
    except (ValueError, FloatingPointError, OSError) as err:
        print(f"scissorhands {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:  # leave the logging of a program that called main() as it was
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
