"""The repair step a run builds once: one SGD step on g_r - lam * g_f, checked against
the closed-form gradients of a least-squares model computed with NumPy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import scissorhands_jax as shs

LR, LAM, WD = 0.1, 0.5, 1e-2


def _loss(params, model_state, batch, train):
    del train
    r = batch["x"] @ params["w"] - batch["y"]
    return jnp.mean(r**2), model_state


def _grad(w, batch):
    """d/dw mean((x w - y)^2) = 2/n x^T (x w - y)."""
    x, y = np.asarray(batch["x"], np.float64), np.asarray(batch["y"], np.float64)
    return 2.0 / len(x) * x.T @ (x @ w - y)


def _setup(kind="gem"):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3,)).astype(np.float32)
    b_r, b_f = (
        {"x": rng.normal(size=(n, 3)).astype(np.float32), "y": rng.normal(size=n).astype("f4")}
        for n in (6, 4)
    )
    tx = shs.repair_tx(
        {"w": True},
        shs.RepairSettings(lr=LR, lam=LAM, momentum=0.9, weight_decay=WD),
        shs.ProjectionSettings(projection=kind),
    )
    params = {"w": jnp.asarray(w)}
    return w, b_r, b_f, tx, shs.TrainState(0, params, {}, tx.init(params))


def test_a_joint_step_is_sgd_on_the_weighted_difference():
    w, b_r, b_f, tx, state = _setup()
    step = shs.repair_step(_loss, tx)
    new, (l_r, l_f) = step(state, (b_r, b_f), jnp.float32(LAM), None, True)
    g = _grad(w, b_r) - LAM * _grad(w, b_f) + WD * w  # first momentum step: the gradient
    np.testing.assert_allclose(np.asarray(new.params["w"]), w - LR * g, rtol=1e-5)
    assert new.step == 1 and l_f is not None
    np.testing.assert_allclose(float(l_r), np.mean((b_r["x"] @ w - b_r["y"]) ** 2), rtol=1e-5)


def test_a_retain_only_step_ignores_the_memory_and_lam():
    w, b_r, _, tx, state = _setup()
    memory = {"w": -jnp.ones((1, 3))}
    new, (_, l_f) = shs.repair_step(_loss, tx)(state, (b_r, None), jnp.float32(LAM), memory)
    np.testing.assert_allclose(
        np.asarray(new.params["w"]), w - LR * (_grad(w, b_r) + WD * w), rtol=1e-5
    )
    assert l_f is None and shs.projection_state(new.opt_state).projected == 0


def test_the_projection_flag_decides_per_step():
    w, b_r, b_f, tx, state = _setup()
    g = _grad(w, b_r) - LAM * _grad(w, b_f)
    memory = {"w": jnp.asarray(-g[None], jnp.float32)}  # opposes the step: GEM must act
    step = shs.repair_step(_loss, tx)
    off, _ = step(state, (b_r, b_f), jnp.float32(LAM), memory, False)
    np.testing.assert_allclose(np.asarray(off.params["w"]), w - LR * (g + WD * w), rtol=1e-5)
    assert shs.projection_state(off.opt_state).projected == 0
    _, _, _, _, state = _setup()  # the step donated the first state's arrays
    on, _ = step(state, (b_r, b_f), jnp.float32(LAM), memory, True)
    assert shs.projection_state(on.opt_state).projected == 1
    # the projected gradient no longer opposes the memory row (<m, g> = -|m|^2 before),
    # up to GEM's ridge eps = 1e-3 on m m^T
    m = np.asarray(memory["w"])[0]
    projected = (w - np.asarray(on.params["w"])) / LR - WD * w
    assert float(m @ projected) >= -1e-3 * float(m @ m)
