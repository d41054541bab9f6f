"""ResNets in Flax Linen with the parameter paths of the paper's eligible sets.

Paths are ``conv1``/``bn1`` (stem), ``layer1`` .. ``layer4`` (stages, each holding
``block0``, ``block1``, ...), and ``fc``, so the release's eligible sets are the presets
``"layer3,layer4,fc"`` and ``"layer4,fc"``. BatchNorm follows PyTorch's defaults
(running-average momentum 0.1, i.e. Flax ``momentum=0.9``; epsilon 1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

_BatchNorm = partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = partial(_BatchNorm, use_running_average=not train)
        y = nn.Conv(self.features, (3, 3), self.strides, padding=1, use_bias=False, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(y)
        y = norm(name="bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = nn.Conv(
                self.features, (1, 1), self.strides, use_bias=False, name="downsample_conv"
            )(x)
            x = norm(name="downsample_bn")(x)
        return nn.relu(x + y)


class Stage(nn.Module):
    """A stage of ``blocks`` basic blocks; the first one may downsample."""

    features: int
    blocks: int
    strides: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.blocks):
            x = BasicBlock(self.features, self.strides if i == 0 else 1, name=f"block{i}")(x, train)
        return x


class ResNet(nn.Module):
    """A basic-block ResNet.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      num_classes: outputs of ``fc``.
      cifar_stem: 3x3 stride-1 stem without max-pool (CIFAR variant) instead of the
        ImageNet 7x7 stride-2 stem with a 3x3 stride-2 max-pool.
      width: channels of the first stage (doubled at each later stage).
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 10
    cifar_stem: bool = True
    width: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.cifar_stem:
            x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="conv1")(x)
        else:
            x = nn.Conv(self.width, (7, 7), 2, padding=3, use_bias=False, name="conv1")(x)
        x = nn.relu(_BatchNorm(use_running_average=not train, name="bn1")(x))
        if not self.cifar_stem:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for i, blocks in enumerate(self.stage_sizes):
            x = Stage(self.width * 2**i, blocks, 1 if i == 0 else 2, name=f"layer{i + 1}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


def resnet18(num_classes: int = 10, *, cifar_stem: bool = True, width: int = 64) -> ResNet:
    """ResNet-18; with the CIFAR stem and 10 classes it has 11,173,962 parameters."""
    return ResNet((2, 2, 2, 2), num_classes, cifar_stem, width)


def resnet34(num_classes: int = 307, *, cifar_stem: bool = False, width: int = 64) -> ResNet:
    """ResNet-34 with the ImageNet stem (the paper's CelebA-HQ identity model)."""
    return ResNet((3, 4, 6, 3), num_classes, cifar_stem, width)
