"""Small shared types: what a params tree, a batch and a loss function are."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import jax

Params = Any
"""A pytree of arrays (Flax ``params`` dict, ``nnx.State``, a plain dict, ...)."""

ModelState = Any
"""Non-trainable model state such as BatchNorm statistics (``{}`` when there is none)."""

Batch = Any
"""A pytree of arrays with a leading example axis, e.g. ``{"image": x, "label": y}``."""

PRNGKey = jax.Array

Mask = Any
"""A boolean pytree shaped like ``Params``."""

BatchSource = Callable[[PRNGKey], Iterable[Batch]]
"""A function from a key to one epoch of batches (shuffled by that key)."""


class LossFn(Protocol):
    """``loss_fn(params, batch) -> scalar``: the task loss of one batch."""

    def __call__(self, params: Params, batch: Batch) -> jax.Array: ...


class ModelLossFn(Protocol):
    """A loss that threads model state, used by the training loops.

    ``loss_fn(params, model_state, batch, train) -> (loss, new_model_state)``; with
    ``train=False`` the model runs in evaluation mode and ``new_model_state`` is the
    input state unchanged.
    """

    def __call__(
        self, params: Params, model_state: ModelState, batch: Batch, train: bool
    ) -> tuple[jax.Array, ModelState]: ...
