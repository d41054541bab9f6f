"""ResNet-18 (CIFAR stem) and ResNet-34 (ImageNet stem): sizes, paths, BatchNorm modes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax.models import ResNet, resnet18, resnet34


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _variables(module, size: int):
    return jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def test_resnet18_cifar_parameter_count():
    # the standard CIFAR ResNet-18 (kuangliu/pytorch-cifar and the SalUn/Scissorhands
    # release): 11,173,962 trainable parameters with 10 classes
    assert _count(_variables(resnet18(10), 32)["params"]) == 11_173_962


def test_resnet34_parameter_count():
    # torchvision's resnet34 has 21,797,672 parameters with a 1000-way fc (512 * 1000 +
    # 1000); with the paper's 307 identities the fc is 512 * 307 + 307
    expected = 21_797_672 - (512 * 1000 + 1000) + (512 * 307 + 307)
    assert _count(_variables(resnet34(307), 224)["params"]) == expected


def _hand_count(stages, width, num_classes, cifar_stem):
    """Parameters of a basic-block ResNet counted by hand (no biases in convolutions)."""
    total = (3 if cifar_stem else 7) ** 2 * 3 * width + 2 * width  # conv1 + bn1
    c_in = width
    for i, blocks in enumerate(stages):
        c = width * 2**i
        for b in range(blocks):
            total += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
            if b == 0 and (i > 0 or c_in != c):
                total += c_in * c + 2 * c  # 1x1 downsample conv + its BatchNorm
            c_in = c
    return total + c_in * num_classes + num_classes


@pytest.mark.parametrize(
    "stages, width, classes, stem",
    [((2, 2, 2, 2), 64, 10, True), ((3, 4, 6, 3), 64, 307, False), ((1, 1, 1, 1), 4, 7, True)],
)
def test_parameter_count_against_hand_count(stages, width, classes, stem):
    params = _variables(ResNet(stages, classes, stem, width), 32)["params"]
    assert _count(params) == _hand_count(stages, width, classes, stem)


def _stage_shapes(module, size: int):
    """Output shapes of the logits and of ``layer1``, traced (not compiled)."""
    init = functools.partial(module.init_with_output, capture_intermediates=True)
    out, variables = jax.eval_shape(init, jax.random.key(0), jnp.zeros((2, size, size, 3)))
    return out.shape, variables["intermediates"]["layer1"]["__call__"][0].shape


def test_stems_and_output_shapes():
    # CIFAR stem: 3x3 stride-1 conv, no max-pool: layer1 keeps 32x32
    assert _stage_shapes(ResNet((1, 1, 1, 1), 10, True, 4), 32) == ((2, 10), (2, 32, 32, 4))
    # ImageNet stem: 7x7 stride-2 conv and stride-2 max-pool: 64 -> 16
    assert _stage_shapes(ResNet((1, 1, 1, 1), 5, False, 4), 64) == ((2, 5), (2, 16, 16, 4))
    assert _stage_shapes(resnet18(10), 32) == ((2, 10), (2, 32, 32, 64))
    assert _stage_shapes(resnet34(307), 224) == ((2, 307), (2, 56, 56, 64))


@pytest.mark.parametrize(
    "preset, stages",
    [("layer3,layer4,fc", ("layer3", "layer4", "fc")), ("layer4,fc", ("layer4", "fc"))],
)
def test_eligible_presets_select_the_stages(preset, stages):
    params = _variables(resnet18(10), 32)["params"]
    mask = shs.eligible_mask(params, preset)
    for path, on in jax.tree_util.tree_flatten_with_path(mask)[0]:
        keys = [p.key for p in path]
        in_stage = keys[0] in stages
        is_norm = any(k.startswith("bn") or k.endswith("_bn") for k in keys)
        assert bool(on) == (in_stage and not is_norm), keys
    n = sum(
        int(np.prod(leaf.shape))
        for leaf, on in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True)
        if on
    )
    hand = {
        "fc": 512 * 10 + 10,
        "layer4": 9 * 256 * 512 + 9 * 512 * 512 + 256 * 512 + 2 * 9 * 512 * 512,
        "layer3": 9 * 128 * 256 + 9 * 256 * 256 + 128 * 256 + 2 * 9 * 256 * 256,
    }
    assert n == sum(hand[s] for s in stages)


def test_batchnorm_train_and_eval_modes():
    model = shs.linen_model(ResNet((1,), 3, True, 4), jnp.zeros((1, 8, 8, 3)))
    params, state = model.init(jax.random.key(0))
    loss = jax.jit(model.loss, static_argnums=3)
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 3)) * 3 + 1
    batch = {"image": x, "label": jnp.array([0, 1, 2, 0, 1, 2])}
    _, new_state = loss(params, state, batch, True)
    mean = new_state["batch_stats"]["bn1"]["mean"]
    assert not np.allclose(mean, state["batch_stats"]["bn1"]["mean"])  # updated in training
    _, same = loss(params, state, batch, False)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), same, state))
    # evaluation mode uses running statistics: an example's logits do not depend on its batch
    logits = jax.jit(model.logits)
    together = logits(params, new_state, x)
    alone = jnp.concatenate([logits(params, new_state, x[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)
    # training mode normalises with the batch: the running mean moves by 0.1 (PyTorch's
    # momentum) towards the batch mean of the stem's output
    stem = jax.lax.conv_general_dilated(
        x,
        params["conv1"]["kernel"],
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    expected = 0.9 * state["batch_stats"]["bn1"]["mean"] + 0.1 * stem.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(mean, expected, rtol=1e-4, atol=1e-5)
