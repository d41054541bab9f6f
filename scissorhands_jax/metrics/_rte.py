"""RTE, the run-time efficiency of an unlearning method: its wall-clock time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax


def rte(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Runs ``fn(*args, **kwargs)`` and measures its wall-clock seconds.

    JAX dispatches asynchronously, so the clock stops only once every array in the
    result is ready (``jax.block_until_ready``); evaluation is not included. The papers
    report RTE in minutes (divide by 60); compilation is part of a first call and of
    every call that meets new shapes.

    Example:
        >>> out, seconds = rte(sum, [1, 2, 3])
        >>> out, seconds >= 0
        (6, True)

    Args:
        fn: the unlearning run.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        ``(result, seconds)``.
    """
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    jax.block_until_ready(result)
    return result, time.perf_counter() - start
