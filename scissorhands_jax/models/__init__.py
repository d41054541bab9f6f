"""Models and the adapters that let any Flax model enter the methods."""

from scissorhands_jax.models.adapters import Model, linen_model, nnx_model
from scissorhands_jax.models.digits import DigitsCNN, DigitsCNNNNX, DigitsMLP
from scissorhands_jax.models.resnet import ResNet, resnet18, resnet34

__all__ = [
    "DigitsCNN",
    "DigitsCNNNNX",
    "DigitsMLP",
    "Model",
    "ResNet",
    "linen_model",
    "nnx_model",
    "resnet18",
    "resnet34",
]
