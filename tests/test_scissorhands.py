"""The whole method (scissorhands_jax._method) on digits-10, on Linen (with and without
BatchNorm) and NNX models, and its refusals: bad settings, data and trees are named
before any work, a non-finite loss or a divergence where it happens."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import accuracy_of, count_true, scissorhands_from_names
from flax import nnx

import scissorhands_jax as shs

FAST = {"batch_size": 64, "progress": False}


@pytest.fixture(scope="module")
def split():
    return shs.data.load_digits10("random10", 0)


def _run(model, params, state, split, **kw):
    """Scissorhands on a digits-10 split, with flat settings: the release's eligibility,
    key 0, one epoch and :data:`FAST`, each overridden by ``kw``."""
    args = dict(retain=split.retain, forget=split.forget, key=jax.random.key(0),
                eligible="all_but_first_conv", epochs=1, **FAST)  # fmt: skip
    args.update(kw)
    return scissorhands_from_names(model, params, state, **args)


def _leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["random10", "class0"])
def test_forgets_and_keeps_retain(digits_model, original, scenario):
    split = shs.data.load_digits10(scenario, 0)
    params, state = original
    before = accuracy_of(digits_model, params, state, split.forget)
    result = _run(digits_model, params, state, split, key=jax.random.key(3), epochs=5)
    after = accuracy_of(digits_model, result.params, result.model_state, split.forget)
    retain_acc = accuracy_of(digits_model, result.params, result.model_state, split.retain)
    assert after < before
    if scenario == "class0":
        assert after <= before - 50  # the class is gone, not merely dented
    assert retain_acc >= 85.0
    # the log: a trim entry, then one per epoch with the release's schedule
    assert result.log[0]["epoch"] == "trim" and result.log[0]["reinitialised"] > 0
    epochs = result.log[1:]
    assert len(epochs) == 5
    n_forget_batches = -(-len(split.forget_idx) // 64)
    n_retain_batches = -(-len(split.retain_idx) // 64)
    for entry in epochs:
        assert entry["joint_steps"] == n_forget_batches
        assert entry["joint_steps"] + entry["retain_steps"] == n_retain_batches
        assert 0 <= entry["projected_steps"] <= entry["joint_steps"]


@pytest.mark.slow
def test_same_key_is_bit_identical_and_input_untouched(digits_model, original):
    split = shs.data.load_digits10("random10", 1)
    params, state = original
    copy = jax.tree.map(np.array, params)
    run = functools.partial(_run, digits_model, params, state, split, epochs=2)
    a, b, c = (run(key=jax.random.key(k)) for k in (7, 7, 8))
    assert _leaves_equal(a.params, b.params)
    assert _leaves_equal(a.mask, b.mask)
    assert not _leaves_equal(a.params, c.params)
    assert _leaves_equal(params, copy)


def test_mask_respects_eligibility_and_sparsity(digits_model, original, split):
    params, state = original
    result = _run(digits_model, params, state, split, epochs=0, sparsity=0.9)
    assert not np.any(np.asarray(result.mask["Conv_0"]["kernel"]))
    n_total = sum(x.size for x in jax.tree.leaves(params))
    n_selected = sum(int(np.sum(m)) for m in jax.tree.leaves(result.mask))
    assert 0 < n_selected <= n_total - int(0.9 * n_total)
    # epochs=0: the result is the trimmed model; unselected entries are bit-identical
    for p, q, m in zip(
        jax.tree.leaves(params),
        jax.tree.leaves(result.params),
        jax.tree.leaves(result.mask),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], np.asarray(q)[~np.asarray(m)])


@pytest.mark.slow
def test_project_every_and_cumulative_memory(digits_model, original, split):
    params, state = original
    run = functools.partial(_run, digits_model, params, state, split, key=jax.random.key(1),
                            epochs=2)  # fmt: skip
    every2 = run(project_every=2)
    for entry in every2.log[1:]:
        assert entry["projected_steps"] <= entry["joint_steps"] // 2
    clean = run(memory_num=2)
    cumulative = run(memory_num=2, cumulative_memory=True)
    assert np.isfinite(cumulative.log[-1]["loss_retain"])
    assert _leaves_equal(clean.mask, cumulative.mask)  # same trim ...
    assert not _leaves_equal(clean.params, cumulative.params)  # ... different memories
    # with one memory batch the running sum is the clean memory: the same run
    one = run()
    one_cumulative = run(cumulative_memory=True)
    assert _leaves_equal(one.params, one_cumulative.params)
    none = run(projection="none")
    assert all(e["projected_steps"] == 0 for e in none.log[1:])


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10, name="fc")(x)


@pytest.mark.slow
def test_linen_batchnorm_model(original, split):
    del original
    model = shs.linen_model(_BNNet(), jnp.zeros((1, 8, 8, 1)))
    params, state = model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(split.train, 64),
        key=jax.random.key(0),
        epochs=2,
        tx=shs.sgd(0.05),
    )
    result = _run(model, params, state, split, key=jax.random.key(2), eligible=None, sparsity=0.8)
    assert set(result.model_state) == {"batch_stats"}
    assert not np.any(np.asarray(result.mask["BatchNorm_0"]["scale"]))
    assert not np.any(np.asarray(result.mask["BatchNorm_0"]["bias"]))
    assert np.any(np.asarray(result.mask["fc"]["kernel"]))
    # the running statistics were updated in training mode during repair
    assert not _leaves_equal(state, result.model_state)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(result.params))


@pytest.mark.slow
def test_nnx_model_through_split():
    split = shs.data.load_digits10("class0", 0)
    make = lambda rngs: shs.DigitsCNNNNX(rngs=rngs, batch_norm=True)  # noqa: E731
    model, params, state = shs.nnx_model(make)
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(split.train, 64),
        key=jax.random.key(0),
        epochs=3,
        tx=shs.sgd(0.05),
    )
    before = accuracy_of(model, params, state, split.forget)
    result = _run(model, params, state, split, key=jax.random.key(1), eligible=r"dense|conv1",
                  epochs=2, sparsity=0.9, lam=0.5)  # fmt: skip
    after = accuracy_of(model, result.params, result.model_state, split.forget)
    assert after < before
    paths = dict(zip(shs.leaf_paths(result.mask), jax.tree.leaves(result.mask), strict=True))
    assert not any(np.any(np.asarray(m)) for p, m in paths.items() if "bn" in p or "conv0" in p)
    # the state merges back into a module that the user keeps working with
    graphdef, _, _ = nnx.split(make(nnx.Rngs(0)), nnx.Param, ...)
    module = nnx.merge(graphdef, result.params, result.model_state)
    module.eval()
    assert module(jnp.asarray(split.test["image"][:4])).shape == (4, 10)


# --------------------------------------------------- bad settings and data, on digits-10


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.5, 1.5, "0.9", None])
def test_sparsity_outside_open_interval(digits_model, original, split, sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        _run(digits_model, *original, split, sparsity=sparsity)


def test_empty_forget_set(digits_model, original, split):
    empty = {k: v[:0] for k, v in split.forget.items()}
    with pytest.raises(ValueError, match="forget set is empty"):
        _run(digits_model, *original, split, forget=empty)


def test_forget_equals_whole_training_set(digits_model, original, split):
    nothing = {k: v[:0] for k, v in split.retain.items()}
    with pytest.raises(ValueError, match="nothing to retain|whole training set"):
        _run(digits_model, *original, split, forget=split.train, retain=nothing)
    # the data layer refuses to build such a request in the first place
    with pytest.raises(ValueError, match="whole training set"):
        shs.data.select_forget(np.zeros(20, np.int32), "class0", 0)


def test_no_eligible_leaf(digits_model, original, split):
    with pytest.raises(ValueError, match="no parameter is eligible.*Conv_0/kernel"):
        _run(digits_model, *original, split, eligible=r"layer4")


@pytest.mark.parametrize(
    "kw, pattern",
    [
        ({"projection": "gme"}, "projection must be one of"),
        ({"reinit": "xavier"}, "reinit must be one of"),
        ({"project_every": 0}, "project_every"),
        ({"memory_num": 0}, "memory_num"),
        ({"epochs": -1}, "epochs"),
    ],
)
def test_bad_settings(digits_model, original, split, kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _run(digits_model, *original, split, **kw)


def test_nan_in_loss_raises(digits_model, original, split):
    params, state = original
    poisoned = jax.tree.map(lambda x: x, params)
    poisoned["Dense_1"]["bias"] = poisoned["Dense_1"]["bias"].at[0].set(jnp.nan)
    with pytest.raises(FloatingPointError, match="loss of forget batch 0 is nan"):
        _run(digits_model, poisoned, state, split)


def test_nan_during_repair_raises(digits_model, original, split):
    with pytest.raises(FloatingPointError, match="repair epoch 1/.*non-finite"):
        _run(digits_model, *original, split, lr=1e12, lam=1e6)


def test_destructive_lr_stops_with_divergence(digits_model, original):
    split = shs.data.load_digits10("random10", 0)
    with pytest.raises(FloatingPointError, match=r"diverged at step \d+.*lower the learning"):
        shs.scissorhands(
            digits_model, *original, retain=split.retain, forget=split.forget,
            key=jax.random.key(0), eligible="all_but_first_conv",
            repair=shs.RepairSettings(lr=1e3, epochs=1),
            training=shs.TrainingSettings(batch_size=64, progress=False),
        )  # fmt: skip


# ------------------------------------------------- bad data and trees, on a tiny problem


@pytest.fixture(scope="module")
def tiny():
    model = shs.linen_model(shs.DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    params, state = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {
        "image": rng.normal(size=(40, 8, 8, 1)).astype(np.float32),
        "label": rng.integers(0, 10, 40).astype(np.int32),
    }
    retain = {k: v[:30] for k, v in data.items()}
    forget = {k: v[30:] for k, v in data.items()}
    return model, params, state, retain, forget


def _unlearn_tiny(tiny, **kw):
    model, params, state, retain, forget = tiny
    args = dict(retain=retain, forget=forget, key=jax.random.key(1),
                repair=shs.RepairSettings(epochs=1),
                training=shs.TrainingSettings(batch_size=8, progress=False))  # fmt: skip
    args.update(kw)
    params = args.pop("params", params)
    return shs.scissorhands(model, params, state, **args)


def _with(data, key, value):
    return {**data, key: value}


def _nan_image(data, row):
    image = data["image"].copy()
    image[row, 3, 3, 0] = np.nan
    return _with(data, "image", image)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda r, f: dict(retain=_nan_image(r, 7)), r"retain data holds NaN or inf in \['image'\] "
                                                     r"\(examples \[7\]"),
        (lambda r, f: dict(forget=_nan_image(f, 2)), "forget data holds NaN or inf"),
        (lambda r, f: dict(forget=_with(f, "label", f["label"] + 10)), r"outside \[0, 10\)"),
        (lambda r, f: dict(retain=_with(r, "label", -r["label"] - 1)), r"outside \[0, 10\)"),
        (lambda r, f: dict(retain=_with(r, "label", r["label"].astype(np.float32))),
         "integer class indices"),
        (lambda r, f: dict(forget={"image": f["image"]}), "forget data has no 'label' entry"),
        (lambda r, f: dict(retain={"x": r["image"], "label": r["label"]}),
         "retain data has no 'image' entry"),
    ],
)  # fmt: skip
def test_bad_data_is_named_before_any_work(tiny, change, pattern):
    _, _, _, retain, forget = tiny
    with pytest.raises(ValueError, match=pattern):
        _unlearn_tiny(tiny, **change(retain, forget))


def test_a_source_is_checked_on_its_first_batch(tiny):
    _, _, _, retain, forget = tiny
    bad = _with(forget, "label", forget["label"].astype(np.float32))
    source = shs.data.array_source(bad, 4)
    with pytest.raises(ValueError, match="first forget batch: the labels 'label' have dtype"):
        _unlearn_tiny(tiny, forget=source)


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(eligible=5), "eligible must be None, a regex or preset name"),
        (dict(eligible="("), r"'\(' is not a valid regular expression"),
        (dict(eligible=shs.Eligibility({"a": True}, {"a": True})), "Eligibility.reinit must"),
    ],
)
def test_bad_eligible_is_named(tiny, kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _unlearn_tiny(tiny, **kw)


def test_integer_params_are_named(tiny):
    _, params, *_ = tiny
    ints = jax.tree.map(lambda x: x.astype(jnp.int32), params)
    with pytest.raises(ValueError, match=r"params: leaf \['Conv_0'\]\['bias'\] has dtype int32"):
        _unlearn_tiny(tiny, params=ints)


def test_zero_d_jax_sparsity_is_accepted(tiny):
    got = _unlearn_tiny(tiny, trim=shs.TrimSettings(sparsity=jnp.asarray(0.9)),
                   repair=shs.RepairSettings(epochs=0))  # fmt: skip
    n = sum(np.size(x) for x in jax.tree.leaves(tiny[1]))  # every leaf is eligible
    assert got.log[0]["reinitialised"] == n - math.floor(float(np.float32(0.9)) * n)
    scores = {"a": jnp.arange(10.0)}
    assert count_true(shs.top_k_mask(scores, jnp.float32(0.8))) == 2
