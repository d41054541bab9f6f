"""The ``scissorhands`` command line: thin, it parses flags and calls the library.

Each subcommand is a module of :mod:`scissorhands_jax.commands` with ``add_parser(sub)``
(cheap: no heavy imports) and ``run(args) -> exit code``; :data:`COMMANDS` lists them.
Building the parser loads no numerical library, so ``--help`` and a mistyped flag answer
at once; the process around a command (the compilation cache, a multi-process job, the
output) is :mod:`scissorhands_jax.experiment.runtime`'s.

Every command ends with one line, never a traceback, and a status that says what
happened: 0 done; 2 an error (bad input, a damaged file, a full disk: named, with what to
do); 75 stopped by SIGTERM (a cluster's preemption) after saving what it could, so that
the same command resumes (``EX_TEMPFAIL``: requeue it); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence

from scissorhands_jax._preemption import EXIT_PREEMPTED, Preempted

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
    "tune": "scissorhands_jax.commands.tune",
    "unlearn": "scissorhands_jax.commands.unlearn",
}
"""Subcommand name -> module implementing it."""

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
"""A command's exit status on an error and on Ctrl-C (on SIGTERM: ``EXIT_PREEMPTED``)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``scissorhands`` parser with every command of :data:`COMMANDS`; cheap: building
    it (and so ``--help``) imports no numerical library, only the command modules."""
    parser = argparse.ArgumentParser(prog="scissorhands", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for path in COMMANDS.values():
        importlib.import_module(path).add_parser(sub)
    return parser


@contextlib.contextmanager
def _old_spellings() -> Iterator[None]:
    """Shows the commands' DeprecationWarnings (Python hides them outside ``__main__``), in
    one line: an old spelling of a flag says its new one while it still works."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "default", category=DeprecationWarning, module=r"scissorhands_jax\.commands"
        )
        show = warnings.showwarning

        def one_line(message, category, filename, *rest):
            if issubclass(category, DeprecationWarning) and "scissorhands_jax" in filename:
                print(f"scissorhands: deprecated: {message}", file=sys.stderr)
            else:
                show(message, category, filename, *rest)

        warnings.showwarning = one_line
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scissorhands`` console script."""
    args = build_parser().parse_args(argv)  # --help and bad flags exit here, before jax loads
    from scissorhands_jax.experiment import runtime

    runtime.enable_compilation_cache()
    name = f"scissorhands {args.command}"
    try:  # the process is left as it was found (signals, logging) before the last line
        with runtime.command_process(args), _old_spellings():
            return importlib.import_module(COMMANDS[args.command]).run(args)
    except Preempted:
        print(
            f"{name}: stopped by SIGTERM; what was finished is saved: rerun the same command "
            "to resume",
            file=sys.stderr,
        )
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print(f"{name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if not runtime.reported(err):
            raise  # a bug: its traceback is what a report needs
        print(f"{name}: error: {runtime.error_line(err)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
