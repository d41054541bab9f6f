"""The one rule for integer seeds, NumPy only (the data modules check seeds too)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from scissorhands_jax._choices import SEED_LIMIT


def check_seed(name: str, value: Any) -> int:
    """``value`` as a Python int.

    Args:
      name: the argument's name, for the message.
      value: a Python or NumPy integer, or a 0-d integer array (not a bool).

    Returns:
      The seed as a Python int.

    Raises:
      ValueError: unless ``value`` is an integer in ``[0, SEED_LIMIT)``.
    """
    x = value
    if isinstance(x, np.ndarray) and x.shape == () and np.issubdtype(x.dtype, np.integer):
        x = x.item()
    elif isinstance(x, np.integer):
        x = x.item()
    if isinstance(x, bool | np.bool_) or not isinstance(x, numbers.Integral):
        raise ValueError(f"{name} must be an integer in [0, 2**31), got {value!r}.")
    if not 0 <= x < SEED_LIMIT:
        raise ValueError(
            f"{name} must be an integer in [0, 2**31), got {value!r}: larger or negative "
            "seeds alias other seeds in JAX's 32-bit keys."
        )
    return int(x)
