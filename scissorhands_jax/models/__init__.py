"""Models and the adapters that let any Flax model enter the methods."""

from scissorhands_jax.models._adapters import Model, linen_model, nnx_model
from scissorhands_jax.models.digits import DigitsCNN, DigitsCNNNNX

__all__ = ["DigitsCNN", "DigitsCNNNNX", "Model", "linen_model", "nnx_model"]
