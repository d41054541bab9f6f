"""Tests for scissorhands_jax._reinit: eligibility, masked re-initialisation, PyTorch init.

Expected eligible sets are written out by hand per path; expected re-initialised trees
are built leaf by leaf in NumPy; ``torch_default_init`` is checked against the bound
``1/sqrt(fan_in)`` and the standard deviation of a uniform distribution.
"""

import copy
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import scissorhands_jax as shs
from scissorhands_jax._reinit import (
    PRESETS,
    eligible_mask,
    is_norm_path,
    leaf_paths,
    masked_reinit,
    path_regex,
    torch_default_init,
)

# ------------------------------------------------------------------------- fixtures


def _resnet_like_params(rng):
    """A Linen-style ResNet params dict with every kind of leaf the filters must handle."""

    def a(*shape):
        return rng.normal(0.0, 1.0, shape).astype(np.float32)

    def block(cin, cout, downsample):
        out = {"conv1": {"kernel": a(3, 3, cin, cout)}, "bn1": {"scale": a(cout), "bias": a(cout)}}
        if downsample:
            out["downsample_0"] = {"kernel": a(1, 1, cin, cout)}
            out["downsample_1"] = {"scale": a(cout), "bias": a(cout)}
        return out

    return {
        "Conv_0": {"kernel": a(3, 3, 3, 4), "bias": a(4)},
        "BatchNorm_0": {"scale": a(4), "bias": a(4)},
        "layer1": {"0": block(4, 4, False)},
        "layer3": {"0": block(4, 6, True)},
        "layer4": {"0": block(6, 8, True)},
        "fc": {"kernel": a(8, 10), "bias": a(10)},
    }


def _batch_stats(rng):
    def a(*shape):
        return rng.normal(0.0, 1.0, shape).astype(np.float32)

    return {
        "BatchNorm_0": {"mean": a(4), "var": a(4)},
        "layer4": {"0": {"bn1": {"mean": a(8), "var": a(8)}, "downsample_1": {"mean": a(8)}}},
    }


KERNELS = {
    "Conv_0/kernel",
    "layer1/0/conv1/kernel",
    "layer3/0/conv1/kernel",
    "layer3/0/downsample_0/kernel",
    "layer4/0/conv1/kernel",
    "layer4/0/downsample_0/kernel",
    "fc/kernel",
}
ALL_NON_NORM = KERNELS | {"Conv_0/bias", "fc/bias"}
LAYER4_FC = {"layer4/0/conv1/kernel", "layer4/0/downsample_0/kernel", "fc/kernel", "fc/bias"}
LAYER3_4_FC = LAYER4_FC | {"layer3/0/conv1/kernel", "layer3/0/downsample_0/kernel"}


def _eligible_paths(mask):
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    paths = leaf_paths(mask)
    assert len(paths) == len(flat)
    for leaf in jax.tree.leaves(mask):
        assert isinstance(leaf, bool | np.bool_)
    return {p for p, leaf in zip(paths, jax.tree.leaves(mask), strict=True) if leaf}


def _bits(x):
    x = np.asarray(x)
    return x.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


# ------------------------------------------------------------------ paths and norms


def test_leaf_paths_order_and_format():
    params = _resnet_like_params(np.random.default_rng(0))
    paths = leaf_paths(params)
    assert len(paths) == len(jax.tree.leaves(params))
    assert set(paths) >= ALL_NON_NORM
    assert "layer4/0/downsample_1/scale" in paths
    assert leaf_paths({"a": [np.zeros(1), (np.zeros(1),)]}) == ["a/0", "a/1/0"]


@pytest.mark.parametrize(
    "path",
    [
        "BatchNorm_0/scale",
        "BatchNorm_0/bias",
        "bn1/bias",
        "layer4/0/bn2/scale",
        "LayerNorm_0/scale",
        "GroupNorm_3/bias",
        "encoder/encoder_norm/scale",
        "down_blocks_0/resnets_0/norm1/scale",
        "batch_stats/layer1/0/bn1/mean",
        "batch_stats/BatchNorm_0/var",
        "bn1/mean",
        "bn1/var",
    ],
)
def test_is_norm_path_true(path):
    assert is_norm_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "Conv_0/kernel",
        "layer4/0/conv1/kernel",
        "layer4/0/downsample_0/kernel",
        "fc/bias",
        "Dense_1/kernel",
        "up_blocks_1/attentions_0/transformer_blocks_0/attn1/to_q/kernel",
        "time_embedding/linear_1/kernel",
        "conv_in/kernel",
    ],
)
def test_is_norm_path_false(path):
    assert not is_norm_path(path)


def test_path_regex_and_presets():
    assert set(PRESETS) >= {"layer4,fc", "layer3,layer4,fc", "all_but_first_conv"}
    pred = path_regex("layer4,fc")
    assert pred("layer4/0/conv1/kernel")
    assert pred("fc/bias")
    assert not pred("layer3/0/conv1/kernel")
    assert not pred("layer40/conv/kernel")
    assert not pred("fc1/kernel")
    with pytest.raises(ValueError, match="structure, not their paths"):
        path_regex("all_but_first_conv")  # it needs the parameters: eligible_mask
    assert path_regex(r"attn1/to_(q|k)")("up/attn1/to_k/kernel")


# --------------------------------------------------------------------- eligible_mask


# A predicate that says yes to norms too: they and the downsample BN still drop out.
_GREEDY = lambda path: path.startswith("fc") or "bn" in path or "downsample" in path  # noqa: E731
_GREEDY_EXPECTED = {"fc/kernel", "fc/bias"}
_GREEDY_EXPECTED |= {"layer3/0/downsample_0/kernel", "layer4/0/downsample_0/kernel"}


@pytest.mark.parametrize(
    ("eligible", "expected"),
    [
        (None, ALL_NON_NORM),
        (lambda path: True, ALL_NON_NORM),
        ("layer4,fc", LAYER4_FC),
        ("layer3,layer4,fc", LAYER3_4_FC),
        ("all_but_first_conv", ALL_NON_NORM - {"Conv_0/kernel", "Conv_0/bias"}),
        (r"kernel$", KERNELS),
        (r"^(layer4|fc)/", LAYER4_FC),
        (_GREEDY, _GREEDY_EXPECTED),
    ],
)
def test_eligible_mask_sets(eligible, expected):
    params = _resnet_like_params(np.random.default_rng(0))
    mask = eligible_mask(params, eligible)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert _eligible_paths(mask) == expected


def test_eligible_mask_never_selects_norms_or_statistics():
    rng = np.random.default_rng(0)
    variables = {"params": _resnet_like_params(rng), "batch_stats": _batch_stats(rng)}
    mask = eligible_mask(variables, lambda path: True)
    assert _eligible_paths(mask) == {"params/" + p for p in ALL_NON_NORM}
    # A module with scale and bias but no kernel is a norm layer whatever its name.
    custom = {"shortcut": {"scale": np.ones(3), "bias": np.ones(3)}, "w": {"kernel": np.ones(3)}}
    assert _eligible_paths(eligible_mask(custom)) == {"w/kernel"}


def test_eligible_mask_with_no_eligible_leaf_lists_paths():
    params = _resnet_like_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="Conv_0/kernel") as info:
        eligible_mask(params, r"does_not_match")
    assert "fc/bias" in str(info.value)
    with pytest.raises(ValueError, match="BatchNorm_0/scale"):
        eligible_mask(params, lambda path: "bn" in path or "BatchNorm" in path)
    with pytest.raises(ValueError):
        eligible_mask(_batch_stats(np.random.default_rng(0)))


# --------------------------------------------------------------------- masked_reinit


def _expected_reinit(params, mask, fresh, eligible_paths):
    """where(mask, fresh, params) on eligible non-bias leaves, where(mask, 0, params) on
    eligible bias leaves, params elsewhere; built per leaf in NumPy."""
    out = {}
    for path, p, m, f in zip(
        leaf_paths(params),
        jax.tree.leaves(params),
        jax.tree.leaves(mask),
        jax.tree.leaves(fresh),
        strict=True,
    ):
        p, m, f = np.asarray(p), np.asarray(m), np.asarray(f)
        if path not in eligible_paths:
            out[path] = p.copy()
        elif path.endswith("/bias"):
            out[path] = np.where(m, np.zeros_like(p), p)
        else:
            out[path] = np.where(m, f.astype(p.dtype), p)
    return out


def _random_masks_and_fresh(params, rng):
    mask = jax.tree.map(lambda p: rng.random(np.shape(p)) < 0.4, params)
    fresh = jax.tree.map(lambda p: rng.normal(100.0, 1.0, np.shape(p)).astype(np.float32), params)
    return mask, fresh


@pytest.mark.parametrize("eligible", [None, "layer4,fc", "layer3,layer4,fc", lambda p: True])
def test_masked_reinit_changes_only_selected_eligible_entries(eligible):
    rng = np.random.default_rng(1)
    params = _resnet_like_params(rng)
    params["fc"]["kernel"][0, :3] = -0.0  # signed zeros must survive bit for bit
    params["BatchNorm_0"]["bias"][0] = -0.0
    mask, fresh = _random_masks_and_fresh(params, rng)
    e = eligible_mask(params, eligible)
    out = masked_reinit(params, mask, fresh, eligible=e)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    expected = _expected_reinit(params, mask, fresh, _eligible_paths(e))
    for path, got in zip(leaf_paths(out), jax.tree.leaves(out), strict=True):
        got = np.asarray(got)
        assert got.dtype == expected[path].dtype and got.shape == expected[path].shape
        np.testing.assert_array_equal(_bits(got), _bits(expected[path]), err_msg=path)


def test_masked_reinit_selected_bias_is_zero_and_norms_untouched():
    rng = np.random.default_rng(2)
    params = _resnet_like_params(rng)
    mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)  # everything selected
    fresh = jax.tree.map(lambda p: np.full(np.shape(p), 7.0, np.float32), params)
    out = masked_reinit(params, mask, fresh, eligible=eligible_mask(params, lambda p: True))
    np.testing.assert_array_equal(np.asarray(out["fc"]["bias"]), np.zeros(10, np.float32))
    np.testing.assert_array_equal(np.asarray(out["Conv_0"]["bias"]), np.zeros(4, np.float32))
    np.testing.assert_array_equal(np.asarray(out["fc"]["kernel"]), np.full((8, 10), 7.0))
    for norm in ("BatchNorm_0", ("layer4", "0", "bn1"), ("layer4", "0", "downsample_1")):
        keys = (norm,) if isinstance(norm, str) else norm
        got, want = out, params
        for key in keys:
            got, want = got[key], want[key]
        for name in ("scale", "bias"):
            np.testing.assert_array_equal(_bits(got[name]), _bits(want[name]))


def test_masked_reinit_does_not_modify_its_inputs():
    rng = np.random.default_rng(3)
    params = _resnet_like_params(rng)  # NumPy leaves: mutable, so this can really fail
    mask, fresh = _random_masks_and_fresh(params, rng)
    e = eligible_mask(params, "layer4,fc")
    before = copy.deepcopy((params, mask, fresh))
    out = masked_reinit(params, mask, fresh, eligible=e)
    jax.block_until_ready(out)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves((params, mask, fresh)), strict=True):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    assert not np.array_equal(np.asarray(out["fc"]["kernel"]), params["fc"]["kernel"])


def test_masked_reinit_keeps_dtype():
    rng = np.random.default_rng(4)
    params = {"fc": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16)}}
    mask = {"fc": {"kernel": rng.random((4, 3)) < 0.5}}
    fresh = {"fc": {"kernel": rng.normal(50.0, 1.0, (4, 3)).astype(np.float32)}}
    out = masked_reinit(params, mask, fresh, eligible={"fc": {"kernel": True}})
    assert out["fc"]["kernel"].dtype == jnp.bfloat16
    want = np.where(
        mask["fc"]["kernel"],
        np.asarray(jnp.asarray(fresh["fc"]["kernel"], jnp.bfloat16)),
        np.asarray(params["fc"]["kernel"]),
    )
    np.testing.assert_array_equal(_bits(out["fc"]["kernel"]), _bits(want))


# ------------------------------------------------------------------ Flax Linen model


class _Block(nn.Module):
    features: int
    downsample: bool

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.features, (3, 3), use_bias=False, name="conv1")(x)
        y = nn.BatchNorm(use_running_average=True, name="bn1")(y)
        if self.downsample:
            x = nn.Conv(self.features, (1, 1), use_bias=False, name="downsample_0")(x)
            x = nn.BatchNorm(use_running_average=True, name="downsample_1")(x)
        return nn.relu(x + y)


class _TinyResNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(x)))
        x = _Block(4, False, name="layer3")(x)
        x = _Block(6, True, name="layer4")(x)
        return nn.Dense(5, name="fc")(x.mean(axis=(1, 2)))


def test_linen_params_trim_end_to_end():
    # The real Linen tree (names, nesting, FrozenDict-free dicts), filled on the host
    # instead of running init: shape inference only, no convolution to compile.
    shapes = jax.eval_shape(_TinyResNet().init, jax.random.key(0), jnp.ones((2, 6, 6, 3)))
    rng = np.random.default_rng(6)
    variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
    assert set(variables) == {"params", "batch_stats"}
    params = variables["params"]
    expected = {"layer4/conv1/kernel", "layer4/downsample_0/kernel", "fc/kernel", "fc/bias"}
    assert _eligible_paths(eligible_mask(params, "layer4,fc")) == expected
    every = eligible_mask(variables, lambda p: True)
    assert _eligible_paths(every) == {
        "params/Conv_0/kernel",
        "params/Conv_0/bias",
        "params/layer3/conv1/kernel",
        "params/layer4/conv1/kernel",
        "params/layer4/downsample_0/kernel",
        "params/fc/kernel",
        "params/fc/bias",
    }
    e = eligible_mask(params, "layer4,fc")
    fresh = jax.tree.map(lambda p: p + 100.0, params)
    mask = jax.tree.map(lambda p: np.arange(p.size).reshape(p.shape) % 2 == 0, params)
    before = jax.tree.map(np.array, params)
    out = masked_reinit(params, mask, fresh, eligible=e)
    want = _expected_reinit(before, mask, fresh, expected)
    for path, got in zip(leaf_paths(out), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(_bits(got), _bits(want[path]), err_msg=path)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(_bits(a), _bits(b))


# ------------------------------------------------------------------------ Flax NNX


class _NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, rngs=rngs)
        self.downsample_1 = nnx.BatchNorm(4, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs), nnx.Linear(4, 4, rngs=rngs)])
        self.fc = nnx.Linear(4, 3, rngs=rngs)


def test_nnx_state_paths_eligibility_and_reinit():
    # Abstract module, filled on the host: real nnx.State paths, no initialiser to compile.
    graphdef, shapes, rest_shapes = nnx.split(
        nnx.eval_shape(lambda: _NNXNet(nnx.Rngs(0))), nnx.Param, ...
    )
    rng = np.random.default_rng(5)
    params, rest = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), (shapes, rest_shapes)
    )
    assert isinstance(params, nnx.State)
    assert set(leaf_paths(params)) == {
        "conv/kernel",
        "conv/bias",
        "bn1/scale",
        "bn1/bias",
        "downsample_1/scale",
        "downsample_1/bias",
        "layers/0/kernel",
        "layers/0/bias",
        "layers/1/kernel",
        "layers/1/bias",
        "fc/kernel",
        "fc/bias",
    }
    assert all(not p.endswith("value") for p in leaf_paths(params) + leaf_paths(rest))
    non_norm = {p for p in leaf_paths(params) if not p.startswith(("bn1", "downsample_1"))}
    assert _eligible_paths(eligible_mask(params)) == non_norm
    assert _eligible_paths(eligible_mask(params, lambda p: True)) == non_norm
    assert _eligible_paths(eligible_mask(params, "layer4,fc")) == {"fc/kernel", "fc/bias"}
    assert _eligible_paths(eligible_mask(params, r"^layers/1/")) == {
        "layers/1/kernel",
        "layers/1/bias",
    }
    with pytest.raises(ValueError, match="bn1/mean"):
        eligible_mask(rest)  # BatchStat mean / var only

    e = eligible_mask(params, lambda p: True)
    mask = jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape) < 0.5), params)
    fresh = jax.tree.map(lambda p: p + 100.0, params)
    before_tree = jax.tree.map(np.array, params)
    before = dict(zip(leaf_paths(before_tree), jax.tree.leaves(before_tree), strict=True))
    out = masked_reinit(params, mask, fresh, eligible=e)
    assert isinstance(out, nnx.State)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    want = _expected_reinit(before_tree, mask, fresh, non_norm)
    for path, got in zip(leaf_paths(out), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(_bits(got), _bits(want[path]), err_msg=path)
    for path, x in zip(leaf_paths(params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(_bits(x), _bits(before[path]), err_msg=path)
    merged = nnx.merge(graphdef, out, rest)
    m_fc = np.asarray(mask["fc"]["bias"][...])
    np.testing.assert_array_equal(np.asarray(merged.fc.bias[...])[m_fc], 0.0)
    np.testing.assert_array_equal(_bits(merged.bn1.scale[...]), _bits(before["bn1/scale"]))


# --------------------------------------------------------------- torch_default_init


@pytest.mark.parametrize(("shape", "fan_in"), [((3, 3, 16, 32), 144), ((64, 10), 64)])
def test_torch_default_init_bound_and_std(shape, fan_in):
    params = {"layer": {"kernel": jnp.zeros(shape, jnp.float32)}}
    x = np.asarray(torch_default_init(jax.random.key(0), params)["layer"]["kernel"])
    assert x.shape == shape and x.dtype == np.float32
    bound = 1.0 / math.sqrt(fan_in)
    assert np.all(np.abs(x) <= bound)
    assert np.max(np.abs(x)) > 0.97 * bound  # the full range is used: not a smaller bound
    assert abs(np.std(x) / (bound / math.sqrt(3.0)) - 1.0) < 0.06
    assert abs(np.mean(x)) < 0.1 * bound


def test_torch_default_init_keys_and_leaves():
    params = {
        "a": {"kernel": jnp.zeros((8, 8)), "bias": jnp.zeros((300,))},
        "b": {"kernel": jnp.zeros((8, 8))},
        "c": {"kernel": jnp.zeros((8, 8), jnp.bfloat16)},
    }
    f0 = torch_default_init(jax.random.key(0), params)
    f0_again = torch_default_init(jax.random.key(0), params)
    f1 = torch_default_init(jax.random.key(1), params)
    assert jax.tree.structure(f0) == jax.tree.structure(params)
    assert f0["c"]["kernel"].dtype == jnp.bfloat16
    assert np.all(np.abs(np.asarray(f0["c"]["kernel"], np.float32)) <= 1.0 / math.sqrt(8))
    for a, b in zip(jax.tree.leaves(f0), jax.tree.leaves(f0_again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(f0["a"]["kernel"]), np.asarray(f1["a"]["kernel"]))
    # Leaves of the same shape draw independently.
    a_kernel = np.asarray(f0["a"]["kernel"])
    assert not np.array_equal(a_kernel, np.asarray(f0["b"]["kernel"]))
    # A 1-D leaf is a column as in the release: fan_in = 1, U(-1, 1).
    bias = np.asarray(f0["a"]["bias"])
    assert np.all(np.abs(bias) <= 1.0) and np.max(np.abs(bias)) > 0.9


def test_masked_reinit_refuses_non_finite_fresh_values_naming_the_leaf():
    # NaN fresh values were once written into the model at the selected entries
    p = {"Dense_0": {"kernel": jnp.ones(3), "bias": jnp.ones(3)}}
    m = {"Dense_0": {"kernel": jnp.array([True, False, True]), "bias": jnp.ones(3, bool)}}
    e = {"Dense_0": {"kernel": True, "bias": True}}
    fresh = {"Dense_0": {"kernel": jnp.array([0.5, 0.5, jnp.nan]), "bias": jnp.zeros(3)}}
    with pytest.raises(ValueError, match=r"fresh values of 'Dense_0/kernel' hold 1 NaN"):
        masked_reinit(p, m, fresh, eligible=e)
    # NaN at an unselected entry, or in a bias (reset to 0), is never written: accepted
    fresh["Dense_0"]["kernel"] = jnp.array([0.5, jnp.nan, 0.5])
    fresh["Dense_0"]["bias"] = jnp.full(3, jnp.inf)
    out = masked_reinit(p, m, fresh, eligible=e)
    assert out["Dense_0"]["kernel"].tolist() == [0.5, 1.0, 0.5]
    assert out["Dense_0"]["bias"].tolist() == [0.0, 0.0, 0.0]


# ----------------------------------------------------------- trees masked_reinit refuses


P3 = {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.ones(2)}


M3 = {"kernel": jnp.array([[True, False], [False, True], [True, True]]), "bias": jnp.ones(2, bool)}


F3 = {"kernel": jnp.full((3, 2), 7.0), "bias": jnp.full(2, 7.0)}


E3 = {"kernel": True, "bias": True}


@pytest.mark.parametrize(
    "mask, fresh, pattern",
    [
        (M3, {**F3, "kernel": jnp.full((1, 2), 7.0)}, "fresh values of 'kernel' .* shape"),
        (M3, {**F3, "kernel": jnp.full((3,), 7.0)}, "fresh values of 'kernel'"),
        ({**M3, "kernel": jnp.ones(2, bool)}, F3, "mask of 'kernel' must be a bool array"),
        ({**M3, "kernel": jnp.full((3, 2), 0.2)}, F3, "float mask is not read as True/False"),
        (M3, {"kernel": F3["kernel"]}, "`fresh` must have the structure of `params`"),
        ({**M3, "extra": jnp.ones(1, bool)}, F3, "unexpected \\['extra'\\]"),
    ],
)
def test_masked_reinit_refuses_trees_it_would_broadcast(mask, fresh, pattern):
    eager = functools.partial(shs.masked_reinit, eligible=E3)
    for reinit in (eager, jax.jit(eager)):  # the checks read shapes: they hold under jit
        with pytest.raises(ValueError, match=pattern):
            reinit(P3, mask, fresh)


def test_masked_reinit_refuses_integer_parameters_and_traced_eligibility():
    ints = {**P3, "kernel": jnp.arange(6).reshape(3, 2)}
    with pytest.raises(ValueError, match="'kernel' has dtype int32; only float"):
        shs.masked_reinit(ints, M3, F3, eligible=E3)
    out = shs.masked_reinit(ints, M3, F3, eligible={"kernel": False, "bias": True})
    np.testing.assert_array_equal(out["kernel"], ints["kernel"])  # not eligible: untouched
    with pytest.raises(ValueError, match="one Python bool per leaf"):
        shs.masked_reinit(P3, M3, F3, eligible={"kernel": "yes", "bias": True})


def test_masked_reinit_still_matches_where_on_good_trees():
    out = jax.jit(lambda p, m, f: shs.masked_reinit(p, m, f, eligible=E3))(P3, M3, F3)
    np.testing.assert_array_equal(out["kernel"], np.where(M3["kernel"], 7.0, P3["kernel"]))
    np.testing.assert_array_equal(out["bias"], [0.0, 0.0])  # selected biases become 0
