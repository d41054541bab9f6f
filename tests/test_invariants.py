"""Every unlearning method and every projection through the same invariants.

Jitted, finite, shapes and dtypes kept, state structure stable, and no retrace once the
first call has compiled its programs.
"""

from __future__ import annotations

import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import scissorhands_flat

import scissorhands_jax as shs


def _scissorhands(model, params, state, split, key, epochs):
    return scissorhands_flat(
        model,
        params,
        state,
        retain=split.retain,
        forget=split.forget,
        key=key,
        eligible="all_but_first_conv",
        epochs=epochs,
        batch_size=64,
        progress=False,
    )


METHODS = {"scissorhands": _scissorhands}

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
@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_invariants(name, digits_model, original):
    split = shs.data.load_digits10("random10", 2)
    params, state = original
    method = METHODS[name]
    result = method(digits_model, params, state, split, jax.random.key(0), 1)
    assert jax.tree.structure(result.params) == jax.tree.structure(params)
    assert jax.tree.structure(result.model_state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(result.params), jax.tree.leaves(params), strict=True):
        assert new.shape == old.shape and new.dtype == old.dtype
        assert np.all(np.isfinite(np.asarray(new)))
    # compiled once per run, no retrace after the first step: from empty caches, a run
    # three times as long with another key compiles no more programs than a short one
    short = _compiles_of(lambda: method(digits_model, params, state, split, jax.random.key(1), 1))
    long = _compiles_of(lambda: method(digits_model, params, state, split, jax.random.key(2), 3))
    assert 0 < short == long


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


@pytest.mark.parametrize(
    "module",
    ["_saliency", "_reinit", "_projection", "_stored_memory", "_memory"],
)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"scissorhands_jax.{module}")
    failures, tried = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 or module == "_memory"
    assert failures == 0


def test_public_api_is_sorted_and_importable():
    assert shs.__all__ == sorted(shs.__all__)
    for name in shs.__all__:
        assert getattr(shs, name) is not None
