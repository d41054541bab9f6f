"""The "all_but_first_conv" preset finds the first convolution by structure, whatever it
is called, and refuses trees where that is ambiguous."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import scissorhands_jax as shs


def _z(*shape):
    return np.zeros(shape, np.float32)


def _conv(cin, cout):
    return {"kernel": _z(3, 3, cin, cout), "bias": _z(cout)}


def _excluded(params):
    mask = shs.eligible_mask(params, "all_but_first_conv")
    return {p for p, e in zip(shs.leaf_paths(params), jax.tree.leaves(mask), strict=True) if not e}


@pytest.mark.parametrize(
    ("params", "first"),
    [
        # Flax's MNIST example names its layers conv1, conv2, linear1, linear2
        ({"conv1": _conv(1, 32), "conv2": _conv(32, 64), "linear1": _conv(1, 1)["bias"]}, "conv1"),
        (
            {"Conv_0": _conv(1, 32), "Conv_1": _conv(32, 64), "Dense_0": {"kernel": _z(4, 2)}},
            "Conv_0",
        ),
        # custom names, listed in the model's order though not alphabetically
        ({"stem": _conv(3, 8), "body": _conv(8, 16), "head": {"kernel": _z(16, 2)}}, "stem"),
        # nested, with a downsample convolution reading the same channels as a block
        (
            {
                "features": {"in": _conv(3, 4), "block": _conv(4, 4), "down": _conv(4, 8)},
                "classifier": {"kernel": _z(8, 10)},
            },
            "features/in",
        ),
    ],
)
def test_first_conv_by_structure(params, first):
    assert _excluded(params) == {f"{first}/kernel", f"{first}/bias"}


def test_first_conv_of_linen_and_nnx_models():
    class CNN(nn.Module):  # Flax's MNIST CNN with its layers named as Flax's example does
        @nn.compact
        def __call__(self, x):
            x = nn.avg_pool(nn.relu(nn.Conv(32, (3, 3), name="conv1")(x)), (2, 2), (2, 2))
            x = nn.avg_pool(nn.relu(nn.Conv(64, (3, 3), name="conv2")(x)), (2, 2), (2, 2))
            x = nn.relu(nn.Dense(256, name="linear1")(x.reshape(x.shape[0], -1)))
            return nn.Dense(10, name="linear2")(x)

    params = jax.eval_shape(CNN().init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    assert _excluded(params) == {"conv1/kernel", "conv1/bias"}
    _, nnx_params, _ = nnx.split(
        shs.DigitsCNNNNX(rngs=nnx.Rngs(0), batch_norm=True), nnx.Param, ...
    )
    assert _excluded(nnx_params) == {
        "conv0/kernel",
        "conv0/bias",
        *(f"bn{i}/{leaf}" for i in (0, 1) for leaf in ("scale", "bias")),  # never eligible
    }


@pytest.mark.parametrize(
    ("params", "why"),
    [
        # the model defines stem then block, but sorted by name (jax.tree.map) block comes
        # first: the order and the data flow disagree
        ({"block": _conv(8, 16), "stem": _conv(3, 8)}, "the tree lists block/kernel first"),
        # two stems reading different inputs
        ({"rgb": _conv(3, 8), "depth": _conv(1, 8), "fuse": _conv(8, 8)}, "2 convolutions read"),
        # an autoencoder whose last convolution writes the input's channels back
        ({"enc": _conv(3, 8), "dec": _conv(8, 3)}, "every convolution reads a channel count"),
        ({"dense": {"kernel": _z(4, 2)}}, "no convolution"),
    ],
)
def test_ambiguous_trees_are_refused_with_the_reason(params, why):
    with pytest.raises(ValueError, match=why):
        shs.eligible_mask(params, "all_but_first_conv")
