"""The step loop (scissorhands_jax._loop): a divergence or a non-finite loss is named at
the step it happens, with what to do, measured on scripted losses."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax._loop import run_steps


def _scripted(losses, batches=None):
    """A step function whose retain losses are ``losses`` (no parameters move)."""

    def step(state, b_r, b_f, memory, i):
        return state._replace(step=state.step + 1), jnp.float32(losses[i - 1]), None

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
