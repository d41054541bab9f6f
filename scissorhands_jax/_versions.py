"""What made a number: the software stack and the machine, recorded in every results file.

The same command gives different trained models under different jax/XLA builds and CPUs
(float results of training differ in the last bits, and those differences grow), so a
results file that does not name its stack cannot be compared with another one.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "scikit-learn")


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _commit() -> str | None:
    """The package's git commit (with ``-dirty`` for local changes), or None when the
    package is not run from a git checkout (an installed wheel) or git is absent."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, Any]:
    """The versions and the machine behind a result.

    Returns:
      A JSON-ready dict: ``python``, ``platform``, one entry per package of
      :data:`PACKAGES` (None where it is not installed), ``scissorhands_jax`` (the
      package version), ``commit`` (the git commit where known), ``backend`` and
      ``device_kind`` (JAX's default backend and the kind of its first device).
    """
    import jax

    from scissorhands_jax import __version__

    device = jax.devices()[0]
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "machine": platform.machine(),
        **{name: _package_version(name) for name in PACKAGES},
        "scissorhands_jax": __version__,
        "commit": _commit(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
    }
