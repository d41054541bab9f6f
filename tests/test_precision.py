"""Mixed precision and buffer donation in the training, repair and objective steps."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax import _training as training
from scissorhands_jax._loop import TrainState, private_copy
from scissorhands_jax._objective import adam_tx, train_objective


def _linear_loss(params, state, batch, train):
    """Mean squared error of a linear map; the state counts calls (a float leaf)."""
    pred = batch["x"] @ params["w"] + params["b"]
    value = jnp.mean((pred - batch["y"]) ** 2)
    return value, {"calls": state["calls"] + 1.0}


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=3), jnp.float32),
    }
    batch = {
        "x": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
        "y": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
    }
    return params, {"calls": jnp.float32(0.0)}, batch


def test_float32_is_the_loss_itself():
    assert shs.with_precision(_linear_loss, "float32") is _linear_loss


def test_bfloat16_loss_matches_a_numpy_bfloat16_reference():
    params, state, batch = _problem()
    wrapped = shs.with_precision(_linear_loss, "bfloat16")
    value, new_state = wrapped(params, state, batch, True)
    assert value.dtype == jnp.float32 and new_state["calls"].dtype == jnp.float32

    def bf16(x):  # round to bfloat16, then compute in float64
        return np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float64)

    pred = bf16(batch["x"]) @ bf16(params["w"]) + bf16(params["b"])
    reference = np.mean((pred - bf16(batch["y"])) ** 2)
    exact = np.mean(
        (np.asarray(batch["x"], np.float64) @ np.asarray(params["w"], np.float64)
         + np.asarray(params["b"], np.float64) - np.asarray(batch["y"], np.float64)) ** 2
    )  # fmt: skip
    # within bfloat16's resolution of the rounded-input reference, and not float32-exact
    assert abs(float(value) - reference) <= 2e-2 * abs(reference)
    assert abs(reference - exact) > 1e-6 * abs(exact)


def test_bfloat16_gradients_are_float32_and_close_to_float32_ones():
    params, state, batch = _problem(1)
    wrapped = shs.with_precision(_linear_loss, "bfloat16")
    g16 = jax.grad(lambda p: wrapped(p, state, batch, True)[0])(params)
    g32 = jax.grad(lambda p: _linear_loss(p, state, batch, True)[0])(params)
    for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32), strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=5e-2, atol=5e-2)


def test_equal_wrappers_hash_equal_so_compiled_programs_are_reused():
    a = shs.with_precision(_linear_loss, "bfloat16")
    b = shs.with_precision(_linear_loss, "bfloat16")
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize("bad", ["fp16", "float16", None, 32])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(ValueError, match="precision must be one of"):
        shs.with_precision(_linear_loss, bad)
    with pytest.raises(ValueError, match="precision must be one of"):
        shs.TrainingSettings(precision=bad)


def test_train_step_donates_and_fit_keeps_the_callers_arrays():
    params, state, batch = _problem(2)
    tx = training.sgd(0.1)
    expected_w = np.asarray(params["w"]).copy()
    start = TrainState(0, *private_copy((params, state)), tx.init(params))
    new, _ = training.train_step(_linear_loss, tx)(start, batch)
    assert new.step == 1 and np.all(np.isfinite(np.asarray(new.params["w"])))
    source = shs.data.array_source(batch, 4)
    new, _, log = training.fit(
        _linear_loss, params, state, source, key=jax.random.key(0), epochs=2, tx=tx
    )
    # the caller's parameters are intact after a donating loop, and the loop moved them
    np.testing.assert_array_equal(np.asarray(params["w"]), expected_w)
    assert not np.allclose(np.asarray(new["w"]), expected_w) and len(log) == 2


def test_train_step_consumes_its_inputs_where_the_device_donates():
    params, state, batch = _problem(3)
    tx = training.sgd(0.1)
    p, s = private_copy((params, state))
    training.train_step(_linear_loss, tx)(TrainState(0, p, s, tx.init(p)), batch)
    if jax.devices()[0].platform == "cpu" and not p["w"].is_deleted():
        pytest.skip("this jaxlib's CPU backend does not implement donation")
    assert p["w"].is_deleted() and s["calls"].is_deleted()


def test_objective_and_repair_loops_keep_the_callers_arrays():
    params, state, batch = _problem(4)
    keep = np.asarray(params["w"]).copy()
    source = shs.data.array_source(batch, 4)
    loss = lambda p, s, b, t: _linear_loss(p, state, b, t)  # noqa: E731
    train_objective(
        loss, params, retain=source, key=jax.random.key(0), steps=3, lr=1e-2, tx=adam_tx()
    )
    np.testing.assert_array_equal(np.asarray(params["w"]), keep)
    eligible = jax.tree.map(lambda _: True, params)
    settings = shs.RepairSettings(epochs=1)
    shs.repair(_linear_loss, params, state, retain=source, forget=source,
               key=jax.random.key(1), eligible=eligible, settings=settings,
               progress=False)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(params["w"]), keep)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, config",
    [("train", "digits10_random10.py"), ("diffusion-train", "digits_ddpm_class0.py")],
)
def test_bfloat16_training_from_the_command_line_keeps_float32_parameters(
    tmp_path, command, config
):
    import orbax.checkpoint as ocp

    from scissorhands_jax import cli

    out = tmp_path / "run"
    path = str(ROOT / "scissorhands_jax/configs" / config)
    args = [command, path, "--smoke", "--no-progress", "--out", str(out), "--only", "original"]
    args += ["--set", "train.precision=bfloat16"]
    assert cli.main(args) == 0
    steps = sorted((out / "original" / "checkpoints").iterdir())
    step_dir = [p for p in steps if p.name.isdigit()][-1]
    tree = ocp.StandardCheckpointer().metadata(step_dir / "state").item_metadata
    dtypes = {str(m.dtype) for m in jax.tree.leaves(tree["params"])}
    assert dtypes == {"float32"}, dtypes
