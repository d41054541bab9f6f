"""How a command's process runs: the compilation cache, joining a multi-process job, the
output for people, and the one line that a failed command ends with.

The command line (never the library) turns on JAX's persistent compilation cache, so a
second run of a command loads its compiled programs instead of compiling them again:
the directory is ``$SCISSORHANDS_CACHE`` if set, else ``$XDG_CACHE_HOME/scissorhands_jax/xla``
(``~/.cache/scissorhands_jax/xla``); ``SCISSORHANDS_CACHE=off`` turns it off, and a cache
directory already chosen through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is kept. JAX
writes its entries in place, so concurrent jobs should each have their own directory
(``docs/performance.md``).

Several processes (hosts, or processes on one machine) join one job when every process
is started with ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``
in its environment (:func:`distributed_job`); ``docs/devices.md`` shows a run.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Mapping

from scissorhands_jax._preemption import raise_preempted


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


JOB_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
"""The environment that makes a command one process of a multi-process job."""


def job_settings(environ: Mapping[str, str]) -> tuple[str, int, int] | None:
    """``(coordinator address, number of processes, process id)`` from ``environ``'s
    :data:`JOB_VARIABLES`, or None when none of them is set (a one-process run).

    Raises:
      ValueError: some but not all of them are set, or a value is malformed.
    """
    given = {name: environ.get(name, "").strip() for name in JOB_VARIABLES}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ValueError(
            f"a multi-process job needs all of {', '.join(JOB_VARIABLES)}; "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. Set "
            "every one on every process, or none for a one-process run."
        )
    address = given["JAX_COORDINATOR_ADDRESS"]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"JAX_COORDINATOR_ADDRESS must be HOST:PORT (process 0's host and a free port), "
            f"got {address!r}."
        )
    numbers = {}
    for name in JOB_VARIABLES[1:]:
        try:
            numbers[name] = int(given[name])
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {given[name]!r}.") from None
    count, index = numbers["JAX_NUM_PROCESSES"], numbers["JAX_PROCESS_ID"]
    if count < 1:
        raise ValueError(f"JAX_NUM_PROCESSES must be >= 1, got {count}.")
    if not 0 <= index < count:
        raise ValueError(
            f"JAX_PROCESS_ID must be in 0..{count - 1} (JAX_NUM_PROCESSES={count}), got {index}."
        )
    return address, count, index


@contextlib.contextmanager
def distributed_job(environ: Mapping[str, str] | None = None) -> Iterator[None]:
    """Joins the multi-process job that ``environ`` (default ``os.environ``) describes
    (:func:`job_settings`), before any computation; on processes other than 0, what the
    command prints is discarded inside the block (process 0 speaks for the job; the
    others still log warnings and report errors). Without the variables this does nothing.

    Each process calls ``jax.distributed.initialize`` with the coordinator (process 0
    serves it), the process count and its id; CPU devices exchange their collectives
    through gloo unless ``jax_cpu_collectives_implementation`` was chosen already.

    Raises:
      ValueError: malformed variables (see :func:`job_settings`).
    """
    settings = job_settings(os.environ if environ is None else environ)
    if settings is None:
        yield
        return
    import jax

    if not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not jax.distributed.is_initialized():
        address, count, index = settings
        jax.distributed.initialize(address, num_processes=count, process_id=index)
    if jax.process_index() == 0:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


class MainProcessOnly(logging.Filter):
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
    handler.addFilter(MainProcessOnly())
    package = logging.getLogger("scissorhands_jax")
    package.addHandler(handler)
    quiet = getattr(args, "no_progress", False)  # asked for, not set below for a log file
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.propagate = False
    if hasattr(args, "no_progress") and not sys.stderr.isatty():
        args.no_progress = True
    return handler


_ENOSPC_TEXT = ("No space left on device", f"os_error_code='{errno.ENOSPC}'")
"""How a full disk reads in an error that is not an ``OSError`` (orbax's TensorStore
writes raise ``ValueError("RESOURCE_EXHAUSTED: ... No space left on device
[os_error_code='28']")``)."""


def _no_space(err: BaseException | None) -> tuple[bool, str | None]:
    """Whether ``err``, or an error in its chain of causes, is a full disk; and the path
    it names, if any (orbax and the asynchronous writers wrap it in their own errors)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True, err.filename
        text = str(err)
        if any(marker in text for marker in _ENOSPC_TEXT):
            paths = re.findall(r'"(/[^"]*)"', text)  # TensorStore quotes the files
            return True, paths[-1] if paths else None
        err = err.__cause__ or err.__context__
    return False, None


class _QuietFullDisk(logging.Filter):
    """Drops the log records (with their tracebacks) in which orbax's background threads
    report a full disk: the command's own error says it, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        full = _no_space(error)[0] or any(m in record.getMessage() for m in _ENOSPC_TEXT)
        return not full


def _quiet_closed_loops(previous):
    """A ``sys.unraisablehook`` that drops "Event loop is closed" (TensorStore's callbacks
    into the event loop of an orbax save that failed, a full disk among them) and passes
    every other unraisable error to ``previous``."""

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    return hook


def error_line(err: BaseException) -> str:
    """The one line of a failed command (after ``scissorhands CMD: error: ``)."""
    full, path = _no_space(err)
    if not full:
        return str(err)
    where = f" writing {path}" if path else ""
    return (
        f"no space left on device{where}; free some space (or choose an output directory "
        "on another disk) and rerun the same command to resume"
    )


def reported(err: BaseException) -> bool:
    """Whether a command that raised ``err`` ends with one line (:func:`error_line`): bad
    input, a damaged file, a full disk; any other error is a bug, whose traceback is what a
    report needs."""
    return isinstance(err, ValueError | FloatingPointError | OSError) or _no_space(err)[0]


@contextlib.contextmanager
def command_process(args: argparse.Namespace) -> Iterator[None]:
    """The process around one command, left as it was found when the block ends: the
    output for people (:func:`configure_output`, log lines above the progress bars), the
    full disk's background reports silenced (the command's own error says it), SIGTERM as
    :class:`~scissorhands_jax._preemption.Preempted` (outside a multi-process job, where
    JAX's coordination service takes SIGTERM and picks a step that every process
    reaches), and the job of :func:`distributed_job`."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    package = logging.getLogger("scissorhands_jax")
    saved = package.level, package.propagate
    handler = configure_output(args)
    quiet, unraisable = _QuietFullDisk(), sys.unraisablehook
    logging.getLogger("absl").addFilter(quiet)  # orbax logs through absl
    sys.unraisablehook = _quiet_closed_loops(unraisable)
    in_job = any(os.environ.get(name, "").strip() for name in JOB_VARIABLES)
    in_main_thread = threading.current_thread() is threading.main_thread() and not in_job
    previous = signal.signal(signal.SIGTERM, raise_preempted) if in_main_thread else None
    try:
        # lines above the bars, not in them; then the job (its stdout is the handler's)
        with logging_redirect_tqdm(loggers=[package]), distributed_job():
            yield
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        logging.getLogger("absl").removeFilter(quiet)
        sys.unraisablehook = unraisable
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
