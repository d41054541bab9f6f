"""The step loop (scissorhands_jax._loop): a divergence or a non-finite loss is named at
the step it happens, with what to do, measured on scripted losses; steps are
``step(state, batch) -> (state, metrics)``, built once per run: the loop's memory hook,
and an optimiser that need not be hashable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scissorhands_jax as shs
from scissorhands_jax import _training as training
from scissorhands_jax._loop import run_steps


def _scripted(losses, batches=None):
    """A step function whose retain losses are ``losses`` (no parameters move)."""

    scripted = iter(losses)

    def step(state, batch):
        del batch
        return state._replace(step=state.step + 1), (jnp.float32(next(scripted)), None)

    pairs = [(b, None) for b in (batches or [{"x": np.zeros(2, np.float32)}] * len(losses))]
    return step, pairs


def test_divergence_is_named_at_the_step_it_happens():
    from scissorhands_jax._loop import DIVERGENCE_FACTOR

    # first loss 2.0: the bound is 1000 * 2; step 4 passes it, finite all along
    losses = [2.0, 3.0, 50.0, 2.5e3, 1e9, 1e12]
    step, pairs = _scripted(losses)
    state = shs.TrainState(0, {}, {}, ())
    with pytest.raises(FloatingPointError, match=r"repair epoch 0: .*diverged at step 4.*lower"):
        run_steps(step, state, pairs, desc="repair epoch 0")
    # below the bound nothing is raised, and a small start is measured against 1
    fine, pairs = _scripted([1e-4, 0.5, 900.0])
    assert run_steps(fine, state, pairs)[0].step == 3
    assert DIVERGENCE_FACTOR == 1e3


def test_a_guard_spans_the_epochs_of_a_run():
    from scissorhands_jax._loop import LossGuard

    guard = LossGuard()
    state = shs.TrainState(0, {}, {}, ())
    step, pairs = _scripted([0.1, 0.2])
    state, _ = run_steps(step, state, pairs, guard=guard)
    step, pairs = _scripted([1500.0])  # would be fine as a run of its own
    with pytest.raises(FloatingPointError, match="diverged at step 3"):
        run_steps(step, state, pairs, guard=guard, desc="repair epoch 1")


def test_nan_in_a_later_batch_is_named_as_the_data():
    batches = [{"image": np.zeros((2, 3), np.float32)} for _ in range(3)]
    batches[2] = {"image": np.array([[0, np.nan, 0], [0, 0, 0]], np.float32)}
    step, pairs = _scripted([1.0, 1.0, float("nan")], batches)
    with pytest.raises(FloatingPointError, match=r"step 3 .*retain batch holds 1 NaN or inf.*"
                                                 r"\['image'\].*the data"):  # fmt: skip
        run_steps(step, shs.TrainState(0, {}, {}, ()), pairs)


def test_run_steps_puts_the_refreshed_memory_in_the_state_the_step_sees():
    seen = []

    def step(state, batch):
        b_r, b_f = batch
        seen.append((state.memory, b_f is None))
        return state._replace(step=state.step + 1), (jnp.float32(1.0), None)

    pairs = [({"x": np.zeros(1)}, None)] * 5
    start = shs.TrainState(7, {}, {}, (), memory="stale")  # a memory from elsewhere is dropped
    state, log = run_steps(step, start, pairs, memory_fn=lambda st, i: (st.step, i), memory_every=2)
    # refreshed before steps 0, 2 and 4 (0-based in this call), from the state at that step
    assert [m for m, _ in seen] == [(7, 0), (7, 0), (9, 2), (9, 2), (11, 4)]
    assert state.step == 12 and state.memory is None and log[0]["retain_steps"] == 5
    seen.clear()
    run_steps(step, start, pairs[:2])  # no hook: no memory at all
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
