"""The steps of a run are ``step(state, batch) -> (state, metrics)``, built once per run:
the loop's memory hook, and an optimiser that need not be hashable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scissorhands_jax as shs
from scissorhands_jax import training


def test_run_steps_puts_the_refreshed_memory_in_the_state_the_step_sees():
    seen = []

    def step(state, batch):
        b_r, b_f = batch
        seen.append((state.memory, b_f is None))
        return state._replace(step=state.step + 1), (jnp.float32(1.0), None)

    pairs = [({"x": np.zeros(1)}, None)] * 5
    start = shs.TrainState(7, {}, {}, (), memory="stale")  # a memory from elsewhere is dropped
    state, log = shs.run_steps(
        step, start, pairs, memory_fn=lambda st, i: (st.step, i), memory_every=2
    )
    # refreshed before steps 0, 2 and 4 (0-based in this call), from the state at that step
    assert [m for m, _ in seen] == [(7, 0), (7, 0), (9, 2), (9, 2), (11, 4)]
    assert state.step == 12 and state.memory is None and log[0]["retain_steps"] == 5
    seen.clear()
    shs.run_steps(step, start, pairs[:2])  # no hook: no memory at all
    assert [m for m, _ in seen] == [None, None]


class _Update:
    """An optimiser's update function that cannot be hashed (it holds a dict, say)."""

    __hash__ = None

    def __init__(self, lr):
        self.settings = {"lr": lr}

    def __call__(self, grads, state, params=None):
        del params
        return jax.tree.map(lambda g: -self.settings["lr"] * g, grads), state


def test_train_step_takes_an_optimiser_that_is_not_hashable():
    tx = optax.GradientTransformation(lambda params: optax.EmptyState(), _Update(0.5))

    def loss(params, model_state, batch, train):
        del train
        return jnp.sum((params["w"] - batch["t"]) ** 2), {"n": model_state["n"] + 1}

    w, t = np.array([1.0, -2.0, 3.0], np.float32), np.array([0.0, 1.0, 1.0], np.float32)
    start = shs.TrainState(0, {"w": jnp.asarray(w)}, {"n": jnp.int32(0)}, tx.init(None))
    state, value = training.train_step(loss, tx)(start, {"t": jnp.asarray(t)})
    # by hand: the gradient of sum (w - t)^2 is 2 (w - t); w - 0.5 * 2 (w - t) = t
    np.testing.assert_allclose(np.asarray(state.params["w"]), t, rtol=0, atol=1e-6)
    assert float(value) == float(np.sum((w - t) ** 2)) == 14.0
    assert state.step == 1 and int(state.model_state["n"]) == 1
