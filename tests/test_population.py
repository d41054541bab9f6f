"""Populations: membership halves, and K models trained at once equal to K ``fit`` runs."""

from __future__ import annotations

import doctest

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax import population
from scissorhands_jax.population import (
    membership_matrix,
    model_keys,
    population_logits,
    stack_trees,
    train_population,
    unstack_tree,
)

BACKENDS = [  # the CPU default and the accelerator default fast, the other two marked slow
    ("sequential", False),
    ("vmap", True),
    pytest.param("vmap", False, marks=pytest.mark.slow),
    pytest.param("sequential", True, marks=pytest.mark.slow),
]


class _MLP(nn.Module):
    """A tiny classifier with BatchNorm, so that model state is threaded too."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.8)(x)
        return nn.Dense(3)(nn.relu(x))


@pytest.fixture(scope="module")
def mlp():
    return shs.linen_model(_MLP(), jnp.zeros((1, 5)), input_key="x", label_key="y")


@pytest.fixture(scope="module")
def toy_data():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(50, 5)).astype(np.float32), "y": rng.integers(0, 3, 50)}


def _rows(size: int, num_models: int = 3, n: int = 50) -> np.ndarray:
    rng = np.random.default_rng(size)
    membership = np.zeros((num_models, n), dtype=bool)
    for row in membership:
        row[rng.choice(n, size, replace=False)] = True
    return membership


def _max_diff(a, b) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))


# -- membership_matrix ---------------------------------------------------------------------


def test_membership_halves_every_stratum_in_complementary_pairs():
    strata = np.repeat(np.arange(4), [10, 6, 8, 12])
    m = membership_matrix(3, 8, len(strata), strata=strata)
    assert m.shape == (8, 36) and m.dtype == bool
    for s, size in enumerate([10, 6, 8, 12]):
        np.testing.assert_array_equal(m[:, strata == s].sum(axis=1), size // 2)
    for j in range(4):
        assert not np.any(m[2 * j] & m[2 * j + 1])
        assert np.all(m[2 * j] | m[2 * j + 1])  # even strata: the pair covers everything
    np.testing.assert_array_equal(m.sum(axis=0), 4)  # IN for exactly K/2 models
    assert len({row.tobytes() for row in m[::2]}) == 4  # the pairs draw different halves


def test_membership_odd_strata_leave_one_out_per_pair_and_is_seeded():
    strata = np.array([0] * 5 + [1] * 7)
    m = membership_matrix(0, 6, 12, strata=strata)
    np.testing.assert_array_equal(m[:, strata == 0].sum(axis=1), 2)
    np.testing.assert_array_equal(m[:, strata == 1].sum(axis=1), 3)
    for j in range(3):
        assert not np.any(m[2 * j] & m[2 * j + 1])
        assert (~(m[2 * j] | m[2 * j + 1])).sum() == 2  # one per odd stratum
    np.testing.assert_array_equal(m, membership_matrix(0, 6, 12, strata=strata))
    assert not np.array_equal(m, membership_matrix(1, 6, 12, strata=strata))
    np.testing.assert_array_equal(membership_matrix(5, 2, 9).sum(axis=1), 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_models": 3}, "even"),
        ({"num_models": 0}, "even"),
        ({"num_examples": 1}, "num_examples"),
        ({"strata": np.zeros(5)}, "int array"),
        ({"strata": np.zeros(4, dtype=int)}, "shape"),
    ],
)
def test_membership_rejects_bad_input(kwargs, match):
    args = {"seed": 0, "num_models": 4, "num_examples": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        membership_matrix(**args)


# -- train_population ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fit_references(mlp, toy_data):
    """``fit`` run alone for each model of :func:`_rows` ``(size)``, per ``(size, batch)``."""
    cache = {}

    def get(size, batch_size):
        if (size, batch_size) not in cache:
            membership, refs = _rows(size), []
            for k in range(3):
                init_key, shuffle_key = model_keys(KEY, k)
                subset = {name: x[membership[k]] for name, x in toy_data.items()}
                params, state, _ = shs.fit(
                    mlp.loss, *mlp.init(init_key), shs.data.array_source(subset, batch_size),
                    key=shuffle_key, epochs=EPOCHS, tx=TX,
                )  # fmt: skip
                refs.append((params, state))
            cache[size, batch_size] = refs
        return cache[size, batch_size]

    return get


KEY, TX, EPOCHS = jax.random.key(7), shs.sgd(0.1), 2


def test_model_keys_are_the_documented_fold_ins():
    for k in range(3):
        init_key, shuffle_key = model_keys(KEY, k)
        for got, want in [(init_key, 2 * k), (shuffle_key, 2 * k + 1)]:
            want = jax.random.fold_in(KEY, want)
            assert jnp.array_equal(jax.random.key_data(got), jax.random.key_data(want))


@pytest.mark.parametrize("size, batch_size", [(23, 8), (24, 8)])  # short last batch or none
@pytest.mark.parametrize("backend, scan_steps", BACKENDS)
def test_population_equals_fit_run_alone(
    mlp, toy_data, fit_references, size, batch_size, backend, scan_steps
):
    params, state = train_population(
        mlp.loss,
        mlp.init,
        toy_data,
        _rows(size),
        key=KEY,
        epochs=EPOCHS,
        batch_size=batch_size,
        tx=TX,
        backend=backend,
        scan_steps=scan_steps,
    )
    assert jax.tree.leaves(params)[0].shape[0] == 3
    for k, (ref_params, ref_state) in enumerate(fit_references(size, batch_size)):
        assert _max_diff(unstack_tree(params, k), ref_params) < 1e-6
        assert _max_diff(unstack_tree(state, k), ref_state) < 1e-6
    # the models differ from each other (own init, own data)
    assert _max_diff(unstack_tree(params, 0), unstack_tree(params, 1)) > 1e-3


@pytest.mark.slow
def test_digits_cnn_population_equals_fit(digits_model):
    split = shs.data.load_digits10("random10", 0)
    data = {"image": split.train["image"][:300], "label": split.train["label"][:300]}
    membership = membership_matrix(0, 2, 300, strata=data["label"])
    key, tx = jax.random.key(3), shs.sgd(0.05)
    params, _ = train_population(
        digits_model.loss, digits_model.init, data, membership, key=key, epochs=2,
        batch_size=64, tx=tx,
    )  # fmt: skip
    for k in range(2):
        init_key, shuffle_key = model_keys(key, k)
        subset = {name: x[membership[k]] for name, x in data.items()}
        ref, _, _ = shs.fit(
            digits_model.loss, *digits_model.init(init_key),
            shs.data.array_source(subset, 64), key=shuffle_key, epochs=2, tx=tx,
        )  # fmt: skip
        assert _max_diff(unstack_tree(params, k), ref) < 1e-6


def test_population_logits_equal_each_models_logits(mlp, toy_data):
    params, state = stack_trees([mlp.init(jax.random.key(i)) for i in range(3)])
    state = jax.tree.map(lambda s: s + jnp.arange(3.0).reshape(3, 1), state)  # distinct stats
    for backend in ("vmap", "sequential"):
        logits = population_logits(
            mlp.logits, params, state, toy_data["x"], batch_size=16, backend=backend
        )
        assert logits.shape == (3, 50, 3) and isinstance(logits, np.ndarray)
        for k in range(3):
            ref = mlp.logits(unstack_tree(params, k), unstack_tree(state, k), toy_data["x"])
            np.testing.assert_allclose(logits[k], ref, atol=1e-5)


def test_stack_and_unstack_trees_round_trip():
    trees = [{"a": np.full((2,), i), "b": (np.float32(i),)} for i in range(3)]
    stacked = stack_trees(trees)
    assert stacked["a"].shape == (3, 2) and stacked["b"][0].shape == (3,)
    for i, tree in enumerate(trees):
        assert _max_diff(unstack_tree(stacked, i), tree) == 0


@pytest.mark.parametrize(
    "membership, kwargs, match",
    [
        (np.ones((2, 50), dtype=int), {}, "bool array"),
        (np.ones((2, 49), dtype=bool), {}, "bool array"),
        (np.zeros((2, 50), dtype=bool), {}, "same, non-zero"),
        (np.arange(50) < np.array([[5], [6]]), {}, "same, non-zero"),
        (np.ones((2, 50), dtype=bool), {"backend": "pmap"}, "backend"),
        (np.ones((2, 50), dtype=bool), {"batch_size": 0}, "batch_size"),
    ],
)
def test_train_population_rejects_bad_input(mlp, toy_data, membership, kwargs, match):
    settings = {"key": jax.random.key(0), "epochs": 1, "batch_size": 8, "tx": shs.sgd(0.1)}
    with pytest.raises(ValueError, match=match):
        train_population(mlp.loss, mlp.init, toy_data, membership, **{**settings, **kwargs})


@pytest.mark.parametrize("backend, scan_steps", [("sequential", False), ("vmap", True)])
def test_train_population_raises_on_a_diverging_model(mlp, toy_data, backend, scan_steps):
    data = {**toy_data, "x": toy_data["x"] * 1e30}
    with pytest.raises(FloatingPointError, match="model 0 epoch 0: the loss became non-finite"):
        train_population(
            mlp.loss, mlp.init, data, _rows(20, 2), key=jax.random.key(0), epochs=2,
            batch_size=8, tx=shs.sgd(10.0), backend=backend, scan_steps=scan_steps,
        )  # fmt: skip


def test_docstring_examples_run():
    failures, tried = doctest.testmod(population, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


@pytest.mark.parametrize("backend, scan_steps", [("sequential", False), ("vmap", True)])
def test_train_population_stops_a_finite_divergence(mlp, toy_data, backend, scan_steps):
    # sgd(50) throws the models' losses to thousands of times their start and leaves them
    # at chance, every loss finite: once returned as trained models
    with pytest.raises(FloatingPointError, match=r"model 0 epoch 0: .*diverged at step \d+"):
        train_population(
            mlp.loss, mlp.init, toy_data, _rows(20, 2), key=jax.random.key(0), epochs=2,
            batch_size=8, tx=shs.sgd(50.0), backend=backend, scan_steps=scan_steps,
        )  # fmt: skip
