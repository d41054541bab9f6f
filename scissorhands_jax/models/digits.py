"""The networks of the embedded digits: the digits-10 CNN (conv32 -> conv64 -> dense128 ->
dense10) and the audit's wide MLP."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class DigitsCNN(nn.Module):
    """conv 3x3 32 SAME, relu, conv 3x3 64 SAME, relu, flatten, dense 128, relu, dense 10.

    Parameter paths: ``Conv_0``, ``Conv_1``, ``Dense_0``, ``Dense_1``; the protocol's eligible
    set for digits is everything but ``Conv_0`` (preset ``"all_but_first_conv"``).
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or normalisation; kept for the common model signature
        x = nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x))
        x = nn.relu(nn.Conv(64, (3, 3), padding="SAME")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.num_classes)(x)


class DigitsMLP(nn.Module):
    """Two hidden ReLU layers of ``width`` units on the flattened 8x8 digit.

    Parameter paths: ``hidden1``, ``hidden2``, ``head``. Wide and unregularised, it
    memorises a small training set, which makes membership measurable in the audit
    (Scissorhands' eligible set there is everything but ``hidden1``).
    """

    width: int = 512
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or normalisation; kept for the common model signature
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.width, name="hidden1")(x))
        x = nn.relu(nn.Dense(self.width, name="hidden2")(x))
        return nn.Dense(self.num_classes, name="head")(x)


class DigitsCNNNNX(nnx.Module):
    """The same network in Flax NNX, with an optional BatchNorm after each conv."""

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 10, batch_norm: bool = False):
        self.conv0 = nnx.Conv(1, 32, (3, 3), padding="SAME", rngs=rngs)
        self.conv1 = nnx.Conv(32, 64, (3, 3), padding="SAME", rngs=rngs)
        self.bn0 = nnx.BatchNorm(32, rngs=rngs) if batch_norm else None
        self.bn1 = nnx.BatchNorm(64, rngs=rngs) if batch_norm else None
        self.dense0 = nnx.Linear(8 * 8 * 64, 128, rngs=rngs)
        self.dense1 = nnx.Linear(128, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv0(x)
        x = jax.nn.relu(self.bn0(x) if self.bn0 is not None else x)
        x = self.conv1(x)
        x = jax.nn.relu(self.bn1(x) if self.bn1 is not None else x)
        x = jnp.reshape(x, (x.shape[0], -1))
        return self.dense1(jax.nn.relu(self.dense0(x)))
