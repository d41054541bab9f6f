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

Every state file a command reads back (the record of a run's settings, its finished rows,
an index of cached outputs) goes through :func:`read_state`: a damaged or foreign file is
one line naming it, what is wrong and what to do. :func:`check_setting` is the one check
of "was this directory made with other settings?".
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

import numpy as np

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


def prepare_out_dir(out: str | os.PathLike) -> Path:
    """Creates ``out`` and checks it is writable, before any work is done (the commands
    also lock it: :func:`run_directory`).

    Raises:
      ValueError: ``out`` exists and is not a directory.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a directory.")
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path):
        pass
    return path


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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)  # a full disk names the file it could not write
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """:func:`write_bytes_atomic` of ``payload`` as indented JSON."""
    write_bytes_atomic(path, json.dumps(payload, indent=2).encode())


def read_state(
    path: str | os.PathLike,
    default: Any = None,
    *,
    kind: type | None = None,
    fix: str = "delete it, or choose another output directory",
) -> Any:
    """The JSON content of the state file ``path``, or ``default`` when it is absent.

    Args:
      path: the file.
      default: what a missing file reads as.
      kind: the type its top level must have (``dict`` or ``list``), or None.
      fix: what the user can do about a damaged file, for the message.

    Raises:
      ValueError: one line naming ``path``, what is wrong with it and ``fix``.
    """
    path = Path(path)
    if not path.exists():
        return default
    if not path.is_file():
        raise ValueError(f"{path} is not a file; {fix}.")
    try:
        value = json.loads(path.read_bytes().decode())
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is damaged (not text: {err}); {fix}.") from None
    except ValueError as err:  # json.JSONDecodeError: truncated, empty, garbage
        raise ValueError(f"{path} is damaged (not JSON: {err}); {fix}.") from None
    if kind is not None and not isinstance(value, kind):
        expected = {dict: "an object", list: "a list"}.get(kind, kind.__name__)
        raise ValueError(
            f"{path} is damaged (it holds {type(value).__name__}, not {expected}); {fix}."
        )
    return value


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, NumPy scalars as numbers)."""

    def encode(v):
        if isinstance(v, np.generic):
            return v.item()
        return str(v)

    return json.loads(json.dumps(value, default=encode))


def _differences(stored: Any, wanted: Any, prefix: str = "") -> list[str]:
    """The dotted names at which two JSON values differ."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(stored) | set(wanted), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in stored or key not in wanted:
                out.append(name)
            else:
                out += _differences(stored[key], wanted[key], name)
        return out
    return [] if stored == wanted else [prefix or "the whole record"]


def check_setting(
    path: str | os.PathLike,
    wanted: dict[str, Any],
    *,
    what: str,
    fix: str,
    keys: tuple[str, ...] | None = None,
    optional: tuple[str, ...] = (),
    write: bool = True,
) -> None:
    """Refuses a directory made with other settings, then records ``wanted`` in ``path``.

    The one check behind every resumable command: ``path`` (e.g. ``OUT/setting.json``)
    records the settings that the directory's results depend on; a rerun with the same
    settings resumes, one with other settings is refused, naming the keys that differ;
    a file of another command (other keys) is said to be one.

    Args:
      path: the record; written (atomically) when absent or equal, with ``write``.
      wanted: the settings of this run (JSON-serialisable).
      what: what the directory holds, for the message (``"an audit"``).
      fix: what to do instead (``"pass a new --out, or the same --seed, to resume"``).
      keys: compare only these top-level keys (others may change between runs), which
        must all be in a record of this kind; None: all of them.
      optional: top-level keys that a record of this kind may lack (read as None there),
        so that a record written before they existed, or without them, still resumes.
      write: record ``wanted`` after the check.

    Raises:
      ValueError: a damaged record, one of another kind, or one with other settings.
    """
    path = Path(path)
    stored = read_state(
        path, kind=dict, fix="delete it to start this directory afresh, or choose another --out"
    )
    plain = _plain(wanted)
    if stored is not None:
        stored = {**dict.fromkeys(optional), **stored}
        plain_all = {**dict.fromkeys(optional), **plain}
        names = tuple(plain_all) if keys is None else keys
        foreign = set(names) - set(stored) if keys is not None else set(stored) ^ set(plain_all)
        if foreign:
            raise ValueError(
                f"{path} does not record {what} (it holds the keys {sorted(stored)}): "
                f"{path.parent} belongs to another command; choose another --out."
            )
        diffs = _differences({k: stored[k] for k in names}, {k: plain_all[k] for k in names})
        if diffs:
            raise ValueError(
                f"{path.parent} holds {what} made with other settings ({', '.join(diffs)}); {fix}."
            )
    if write:
        write_json_atomic(path, plain)


def existing_run(
    path: str | os.PathLike,
    *,
    maker: str,
    holds: str | None = "original",
    kind: str = "model",
    flag: str = "--run",
) -> Path:
    """The run directory ``--run path`` of a command that reads a trained model.

    Args:
      path: the ``--run`` argument.
      maker: the command that makes a run directory, without ``--out``
        (``"scissorhands train CONFIG"``).
      holds: the subdirectory the command needs (``"original"``; None: any).
      kind: what that subdirectory holds, for the message (``"model"``, ``"DDPM"``).
      flag: the argument ``path`` came from, for the message.

    Raises:
      ValueError: ``path`` is missing, is a file, or holds no ``holds``, each said as
        such (a file is never answered with a command that would fail on it).
    """
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"{flag} {directory} is a file, not a run directory; pass the directory that "
            f"`{maker} --out DIR` wrote."
        )
    if not directory.exists():
        raise ValueError(
            f"{flag} {directory} does not exist; train one first with: {maker} --out {directory}"
        )
    if holds is not None and not (directory / holds).is_dir():
        raise ValueError(
            f"{directory} holds no {holds} {kind}; train one first with: {maker} --out {directory}"
        )
    return directory
