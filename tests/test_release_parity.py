"""The release-parity preset for BatchNorm ResNets, checked by hand on a tiny ResNet-18."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs


def _model():
    return shs.linen_model(shs.models.resnet18(10, width=4), jnp.zeros((1, 8, 8, 3), jnp.float32))


@pytest.fixture(scope="module")
def resnet():
    model = _model()
    params, state = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {
        "image": rng.normal(size=(24, 8, 8, 3)).astype(np.float32),
        "label": rng.integers(0, 10, 24).astype(np.int32),
    }
    return model, params, state, data


def _flags(tree):
    return dict(zip(shs.leaf_paths(tree), map(bool, jax.tree.leaves(tree)), strict=True))


def test_leaf_sets_by_hand():
    params, _ = jax.eval_shape(_model().init, jax.random.key(0))  # shapes only
    reinit, protect = shs.release_bn_parity(params)
    reinit, protect = _flags(reinit), _flags(protect)
    for path in protect:
        stage = path.split("/")[0] in ("layer3", "layer4", "fc")
        assert protect[path] == stage, path  # BatchNorm scales and biases included
        name = path.split("/")[-2]  # the module: conv1, bn1, downsample_bn, fc, ...
        want = stage and name not in ("bn1", "bn2")  # downsample_bn passes, as in the release
        assert reinit[path] == want, path
    # by name, as the release's filter sees them
    assert protect["layer3/block0/bn1/scale"] and not reinit["layer3/block0/bn1/scale"]
    assert reinit["layer3/block0/downsample_bn/scale"]
    assert reinit["layer4/block1/conv2/kernel"] and reinit["fc/bias"]
    assert not protect["layer2/block0/conv1/kernel"] and not protect["bn1/scale"]
    # the library's default excludes every normalisation layer
    default = _flags(shs.eligible_mask(params, "layer3,layer4,fc"))
    assert not default["layer3/block0/downsample_bn/scale"]
    assert not default["layer3/block0/bn1/scale"]


@pytest.mark.slow
def test_saliency_in_training_mode_moves_the_statistics(resnet):
    model, params, state, data = resnet
    retain = {k: v[:16] for k, v in data.items()}
    forget = {k: v[16:] for k, v in data.items()}
    common = dict(
        retain=retain,
        forget=forget,
        key=jax.random.key(1),
        eligible=shs.release_bn_parity(params),
        repair=shs.RepairSettings(epochs=0),
        training=shs.TrainingSettings(batch_size=8, progress=False),
    )
    parity = shs.TrimSettings(
        sparsity=0.5, reinit="torch", saliency_train_mode=True, update_stats=True
    )
    res = shs.scissorhands(model, params, state, trim=parity, **common)
    # the one saliency batch (prune_num 1) moved the running statistics, as one
    # training-mode forward pass on it does: mean' = 0.9 mean + 0.1 batch mean
    k_batches = jax.random.split(jax.random.split(jax.random.key(1))[0])[0]
    batch = shs.data.first_batch(
        shs.data.array_source(forget, 8, shuffle=True), jax.random.fold_in(k_batches, 0)
    )
    _, want = model.loss(params, state, batch, True)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        res.model_state,
        want,
    )
    assert not np.allclose(
        res.model_state["batch_stats"]["bn1"]["mean"], state["batch_stats"]["bn1"]["mean"]
    )
    # without update_stats the statistics stay those of the trained model
    plain = shs.TrimSettings(sparsity=0.5, reinit="torch", saliency_train_mode=True)
    res_plain = shs.scissorhands(model, params, state, trim=plain, **common)
    jax.tree.map(np.testing.assert_array_equal, res_plain.model_state, state)


@pytest.mark.slow
def test_downsample_scale_is_redrawn_within_one():
    """Core trim with the parity leaf sets and a loss whose saliency is 2 theta^2: every
    BatchNorm scale (1 at init) outranks the small kernels, but only the downsample one
    is eligible, and PyTorch's default re-draws its 1-D weight uniform in ±1."""
    params, _ = _model().init(jax.random.key(0))
    eligibility = shs.release_bn_parity(params)

    def loss_fn(p, batch):
        del batch
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    trimmed = shs.trim(
        loss_fn,
        params,
        lambda key: iter([{"x": jnp.zeros(1)}]),
        key=jax.random.key(2),
        eligible=eligibility.reinit,
        fresh=shs.fresh_values("torch", params),
        settings=shs.TrimSettings(sparsity=0.9),
    )
    for stage in ("layer3", "layer4"):
        block = (stage, "block0")
        m = np.asarray(trimmed.mask[block[0]][block[1]]["downsample_bn"]["scale"])
        new = np.asarray(trimmed.params[block[0]][block[1]]["downsample_bn"]["scale"])
        assert m.all()  # every scale is selected ...
        assert np.all(np.abs(new) <= 1.0) and np.all(new != 1.0)  # ... and re-drawn in ±1
        assert np.unique(new).size == new.size
        bias_m = np.asarray(trimmed.mask[block[0]][block[1]]["downsample_bn"]["bias"])
        assert not bias_m.any()  # zero at init: never salient
        for bn in ("bn1", "bn2"):  # salient but not eligible: untouched
            assert not np.any(np.asarray(trimmed.mask[block[0]][block[1]][bn]["scale"]))
            np.testing.assert_array_equal(
                trimmed.params[block[0]][block[1]][bn]["scale"],
                params[block[0]][block[1]][bn]["scale"],
            )
    assert not np.any(np.asarray(trimmed.mask["layer2"]["block0"]["downsample_bn"]["scale"]))
