"""Output directories of the commands: one writer at a time, and files that are whole.

:func:`run_directory` creates (or opens) a run directory and holds an exclusive lock on
it while a command writes there: a second command on the same directory fails at once,
naming the process that holds it. The lock is an ``flock`` on ``LOCK_NAME`` inside the
directory, so the operating system releases it when its holder dies, however it dies
(``kill -9`` included): a requeued job is never blocked by a dead one. A directory the
command created and left empty (it failed before writing anything) is removed again.

:func:`write_bytes_atomic` (and its text and JSON forms) write every output file to a
temporary file in the same directory, flushed to disk, then renamed over the target:
a reader, or a job killed mid-write, never leaves a half-written file.

In a multi-process job (``jax.distributed``) every process runs the same command on the
same directory and holds the same results: process 0 locks the directory and writes the
files, the others only read (:func:`secondary_process`).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_NAME = ".scissorhands.lock"
"""The lock file inside a locked run directory (removed when the lock is released)."""


class RunDirectoryBusy(ValueError):
    """Another process holds the lock of a run directory."""


def secondary_process() -> bool:
    """True on the processes other than 0 of a multi-process job: they write no files
    (process 0 writes each one once) and take no lock."""
    if "jax" not in sys.modules:  # nothing has started JAX, so no job either
        return False
    import jax

    return jax.distributed.is_initialized() and jax.process_index() != 0


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (
        f"pid {info.get('pid')} on host {info.get('host')} (`{info.get('command')}`, since "
        f"{info.get('since')})"
    )


def _lock(directory: Path, command: str) -> int:
    """The open, locked descriptor of ``directory``'s lock file.

    Raises:
      RunDirectoryBusy: another process holds the lock.
    """
    path = directory / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise RunDirectoryBusy(
                f"{directory} is in use by {who}; wait for that run to finish (or stop it), "
                "or choose another output directory."
            ) from None
        except OSError as err:  # a file system without locks: go on, unprotected
            logger.warning("cannot lock %s (%s); concurrent runs will not be detected.", path, err)
            return fd
        try:  # the previous holder may have removed the file after we opened it
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


@contextlib.contextmanager
def run_directory(
    path: str | os.PathLike, *, create: bool = True, command: str | None = None
) -> Iterator[Path]:
    """Creates (with ``create``) and locks the run directory ``path`` for the ``with`` block.

    Args:
      path: the directory (``--out`` or ``--run``).
      create: create it when missing; else a missing directory is an error.
      command: what holds the lock, shown to a second command (default: ``sys.argv``).

    Yields:
      ``path`` as a :class:`~pathlib.Path`.

    Raises:
      ValueError: ``path`` is a file, is missing (without ``create``) or is not
        writable; :class:`RunDirectoryBusy` when another process holds it.
    """
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} exists and is not a directory.")
    if not directory.exists() and not create:
        raise ValueError(f"run directory {directory} does not exist.")
    if secondary_process():  # process 0 creates and locks it for the job
        yield directory
        return
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = " ".join(["scissorhands", *sys.argv[1:]])
    try:
        fd = _lock(directory, command)
    except PermissionError as err:
        raise ValueError(f"{directory} is not writable: {err}") from err
    except BaseException:
        _remove_if_empty(directory, created)
        raise
    try:
        yield directory
    except BaseException:
        _release(directory, fd)
        _remove_if_empty(directory, created)
        raise
    _release(directory, fd)


def _release(directory: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / LOCK_NAME)  # while still holding it: see the check in _lock
    os.close(fd)


def _remove_if_empty(directory: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` (flushed to disk, mode 644) and
    renames it over ``path``: readers see the old file or the new one, never a part.
    In a multi-process job only process 0 writes (:func:`secondary_process`)."""
    if secondary_process():
        return
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """:func:`write_bytes_atomic` of ``payload`` as indented JSON."""
    write_bytes_atomic(path, json.dumps(payload, indent=2).encode())
