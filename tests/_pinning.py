"""How the regression pins are compared: what is exact, and how far floats may move.

A pin records, per tree, each leaf's fingerprint ``[sum, sum of squares, x0, x1, x2]``,
and the losses of the log. Training amplifies the last-bit differences between CPUs and
XLA builds (another vector width or thread count sums in another order), so floats are
compared by a normalised deviation against :data:`TOLERANCE`, ten times the largest
spread measured by ``tests/pin_spread.py``; what is computed exactly (masks from
saliency ranks, step counts, settings, integers) must match exactly.

Normalised deviation, per number:

* a fingerprint's sums and entries: ``|got - want| / ||tree||`` and its sums of squares
  ``|got - want| / ||tree||**2``, ``||tree||`` the pinned tree's norm (from the sums of
  squares). Each tree is measured at its own scale, not each leaf at its own: a leaf
  that training leaves near zero (the bias before a BatchNorm, whose gradient is zero;
  entries an L1 penalty keeps oscillating about zero) holds round-off whose sign
  flips between machines, as large relative to that leaf as the leaf itself;
* a loss or other logged float: ``|got - want| / max(|want|, 1)``.
"""

from __future__ import annotations

import math
from typing import Any

MEASURED_SPREAD = 6.6e-6
"""The largest normalised deviation measured by ``tests/pin_spread.py`` between any two of
the pins (recorded on another machine) and the records on an AMD EPYC under its four
XLA settings (JAX 0.10.2, CPU): ``diffusion_scissorhands/contrast``, SSE4.2 against the
default instruction set."""

TOLERANCE = 10 * MEASURED_SPREAD
"""Ten times the measured spread: room for CPUs and XLA builds not measured."""

EXACT_KEYS = ("step", "steps", "defaults", "epoch", "phase", "selected", "reinitialised")
"""Entries computed exactly (besides masks, whose keys end in ``mask``, and integers)."""


def is_exact(key: str) -> bool:
    """True for a pinned entry that is computed exactly (compared with ``==``)."""
    return key in EXACT_KEYS or key.endswith("mask")


def _fingerprint_deviation(got: list, want: list) -> float:
    if len(got) != len(want) or any(len(g) != len(w) for g, w in zip(got, want, strict=True)):
        return math.inf
    norm = math.sqrt(sum(max(w[1], 0.0) for w in want))
    if norm == 0.0:  # an all-zero tree: only zeros match
        return 0.0 if got == want else math.inf
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        devs = [abs(g[0] - w[0]) / norm, abs(g[1] - w[1]) / norm**2]
        devs += [abs(a - b) / norm for a, b in zip(g[2:], w[2:], strict=True)]
        worst = max(worst, *devs)
    return worst


def _is_fingerprint(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, list) and len(v) >= 2 for v in value)
    )


def _deviation(got: Any, want: Any, key: str) -> float:
    """The largest normalised deviation of ``got`` from ``want`` (inf: a mismatch in
    what must be exact, or in structure)."""
    if is_exact(key) or isinstance(want, (str, bool)) or want is None:
        return 0.0 if got == want else math.inf
    if isinstance(want, dict):
        if not isinstance(got, dict) or sorted(got) != sorted(want):
            return math.inf
        return max((_deviation(got[k], want[k], k) for k in want), default=0.0)
    if _is_fingerprint(want):
        return _fingerprint_deviation(got, want) if _is_fingerprint(got) else math.inf
    if isinstance(want, list):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return math.inf
        return max((_deviation(g, w, key) for g, w in zip(got, want, strict=True)), default=0.0)
    if isinstance(want, int):
        return 0.0 if got == want else math.inf
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return math.inf
    return abs(got - want) / max(abs(want), 1.0)


def deviations(got: dict, want: dict) -> dict[str, float]:
    """Per key of a pinned record, the largest normalised deviation of ``got``."""
    if sorted(got) != sorted(want):
        raise AssertionError(f"pinned keys {sorted(want)}, recorded {sorted(got)}")
    return {key: _deviation(got[key], want[key], key) for key in want}


def assert_matches_pin(got: dict, want: dict, where: str) -> None:
    """Raises AssertionError naming every key of ``where`` beyond :data:`TOLERANCE`."""
    bad = {k: d for k, d in deviations(got, want).items() if not d <= TOLERANCE}
    if bad:
        raise AssertionError(
            f"{where}: normalised deviations {bad} exceed {TOLERANCE:.3g} (exact entries "
            "show inf); see tests/_pinning.py for the rule"
        )
