"""Mixed precision: compute in bfloat16, keep parameters and optimiser state in float32.

A loss wrapped by :func:`with_precision` casts the floating-point parameters and batch
leaves to the compute type, runs the network there, and returns the loss in float32
and the new model state in its own dtype (BatchNorm's running statistics stay
float32). Its gradient with respect to the float32 parameters is therefore float32
(the cast's transpose casts back), so the optimiser, its state, the projection and the
checkpoints stay in float32: on GPUs and TPUs the convolutions and matrix products run
on bfloat16 tensor cores, while the updates keep float32's resolution.

``"float32"`` returns the loss unchanged, so the default changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

PRECISIONS = ("float32", "bfloat16")
"""The compute precisions: float32 (the default) and bfloat16 compute with float32
parameters and optimiser state."""


def check_precision(precision: Any) -> None:
    """Raises ValueError unless ``precision`` names one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {PRECISIONS}, got {precision!r}; 'bfloat16' computes "
            "in bfloat16 and keeps float32 parameters and optimiser state."
        )


def _cast(tree: Any, dtype: Any) -> Any:
    def cast(x):
        floating = hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
        return x.astype(dtype) if floating else x

    return jax.tree.map(cast, tree)


@dataclasses.dataclass(frozen=True)
class MixedPrecisionLoss:
    """``loss`` computed in ``dtype`` (see :func:`with_precision`).

    A frozen dataclass, so the same loss and dtype give equal, equally hashed wrappers
    and the programs compiled for one are reused by the next.
    """

    loss: Any
    dtype: str

    def __call__(self, params, model_state, batch, train):
        dtype = jnp.dtype(self.dtype)
        value, new_state = self.loss(_cast(params, dtype), model_state, _cast(batch, dtype), train)
        new_state = jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, model_state)
        return value.astype(jnp.float32), new_state


def with_precision(loss: Any, precision: str = "float32") -> Any:
    """``loss(params, model_state, batch, train) -> (loss, new_state)`` run in ``precision``.

    Args:
      loss: a model loss (``Model.loss``).
      precision: ``"float32"`` (``loss`` itself) or ``"bfloat16"`` (compute in bfloat16;
        the loss value, the new model state and the gradients come back in the
        parameters' float32).

    Raises:
      ValueError: an unknown precision.
    """
    check_precision(precision)
    return loss if precision == "float32" else MixedPrecisionLoss(loss, precision)
