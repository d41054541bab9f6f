"""Every unlearning method and every projection through the same invariants.

Jitted, finite, shapes and dtypes kept, state structure stable, and no retrace once the
first call has compiled its programs. The methods are the comparison's registry
(:data:`scissorhands_jax.baselines.METHODS`), each on the digits CNN trained on digits-10.
"""

from __future__ import annotations

import doctest
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scissorhands_jax as shs
from scissorhands_jax.baselines import METHODS

SETTINGS = {
    "retrain": {"lr": 0.05},
    "ft": {"lr": 0.1},
    "ga": {"lr": 0.03},
    "rl": {"lr": 0.003},
    "l1_sparse": {"alpha": 0.03, "lr": 0.01},
    "salun": {"ratio": 0.5, "lr": 5e-3},
    "iu": {"alpha": 100.0, "fisher_examples": 128, "chunk_size": 32},
    "be": {"lr": 1e-4},
    "bs": {"bound": 0.1, "lr": 1e-4},
    "scrub": {"lr": 5e-3, "max_epochs": 1, "forget_batch_size": 32},
    "scissorhands": {"eligible": "all_but_first_conv"},
}
"""Per method, the digits hyperparameters of the comparison (batches of 64 for all)."""

LONGER = {name: {"epochs": 3} for name in METHODS} | {"iu": {"fisher_examples": 384}}
"""A run three times as long as the one-epoch run: three epochs, or for Influence
Unlearning, which has no epochs, three times the Fisher examples (in chunks of the same
size)."""


def _run(name, model, params, state, split, key, **overrides):
    settings = {"batch_size": 64, **SETTINGS[name]}
    if name != "iu":
        settings["epochs"] = 1
    return METHODS[name](model, params, state, retain=split.retain, forget=split.forget,
                         key=key, **{**settings, **overrides})  # fmt: skip


def test_every_method_has_invariant_settings():
    assert set(SETTINGS) == set(METHODS) == set(LONGER)


TRANSFORMS = {
    "gem": lambda: shs.gem_projection(),
    "gem_t_masked": lambda: shs.gem_projection(margin=0.0, eligible={"a": True, "b": False}),
    "orthogonal": lambda: shs.orthogonal_projection(),
    "orthogonal_on_conflict": lambda: shs.orthogonal_projection(only_on_conflict=True),
}


_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: (
        _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


def _compiles_of(run) -> int:
    """How many programs ``run()`` compiles, from empty caches."""
    jax.clear_caches()
    before = len(_COMPILES)
    run()
    return len(_COMPILES) - before


@pytest.mark.slow
@pytest.mark.parametrize("name", list(METHODS))
def test_method_invariants(name, digits_model, original):
    split = shs.data.load_digits10("random10", 2)
    params, state = original
    result = _run(name, digits_model, params, state, split, jax.random.key(0))
    assert jax.tree.structure(result.params) == jax.tree.structure(params)
    assert jax.tree.structure(result.model_state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(result.params), jax.tree.leaves(params), strict=True):
        assert new.shape == old.shape and new.dtype == old.dtype
        assert np.all(np.isfinite(np.asarray(new)))
    # compiled once per run, no retrace after the first step: from empty caches, a run
    # three times as long with another key compiles no more programs than a short one
    run = lambda key, **kw: _run(name, digits_model, params, state, split, key, **kw)  # noqa: E731
    short = _compiles_of(lambda: run(jax.random.key(1)))
    long = _compiles_of(lambda: run(jax.random.key(2), **LONGER[name]))
    assert 0 < short == long, (name, short, long)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_invariants(name):
    tx = optax.chain(TRANSFORMS[name](), optax.sgd(0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    params = {
        "a": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
    }
    traces = []

    @jax.jit
    def step(params, opt_state, grads, memory):
        traces.append(1)
        updates, opt_state = tx.update(grads, opt_state, params, memory=memory)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    structure = jax.tree.structure(opt_state)
    for i in range(4):
        grads = jax.tree.map(lambda p, i=i: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        memory = jax.tree.map(
            lambda p: jnp.asarray(rng.normal(size=(2, *p.shape)), p.dtype), params
        )
        new_params, opt_state = step(params, opt_state, grads, memory)
        assert jax.tree.structure(opt_state) == structure
        for new, old in zip(jax.tree.leaves(new_params), jax.tree.leaves(params), strict=True):
            assert new.shape == old.shape and new.dtype == old.dtype
            assert np.all(np.isfinite(np.asarray(new, np.float32)))
        params = new_params
    assert len(traces) == 1


CORE_MODULES = [
    sys.modules[fn.__module__]
    for fn in (shs.connection_sensitivity, shs.masked_reinit, shs.gem_projection, shs.set_memory,
               shs.forget_memory)
]  # fmt: skip
"""The core modules whose docstring examples run, found through a public name of each."""


@pytest.mark.parametrize("module", CORE_MODULES, ids=lambda m: m.__name__.rpartition(".")[2])
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 or module is sys.modules[shs.forget_memory.__module__]
    assert failures == 0


def test_public_api_is_sorted_and_importable():
    assert shs.__all__ == sorted(shs.__all__)
    for name in shs.__all__:
        assert getattr(shs, name) is not None
