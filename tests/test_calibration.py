"""The opt-in temperature calibration after the repair, against independent references."""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import logsumexp

import scissorhands_jax as shs
from scissorhands_jax._calibration import (
    TEMPERATURE_RANGE,
    calibrate_temperature,
    find_head,
    fit_temperature,
    mean_logit_confidence,
    scale_head,
)
from scissorhands_jax._settings import CalibrationSettings, flat_defaults, from_flat
from scissorhands_jax.experiment import _audit_population, audit


class _TwoLayer(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = nn.relu(nn.Dense(5, name="hidden")(x.reshape(x.shape[0], -1)))
        return nn.Dense(3, name="head")(x)


def _two_layer():
    return shs.linen_model(_TwoLayer(), jnp.zeros((1, 4), jnp.float32))


def _phi_by_hand(z, y, t=1.0):
    """Mean of log(p_y / (1 - p_y)) = z_y - log sum_{j != y} exp(z_j), with SciPy's
    logsumexp over the other classes (float64)."""
    z = np.asarray(z, np.float64) / t
    rows = np.arange(len(y))
    others = np.where(np.arange(z.shape[1])[None, :] == np.asarray(y)[:, None], -np.inf, z)
    return float(np.mean(z[rows, y] - logsumexp(others, axis=1)))


def test_mean_logit_confidence_by_hand():
    # (0, log 3) with label 1: p_y = 3/4, phi = log 3; (0, 0, log 2) with label 2:
    # p_y = 1/2, phi = 0; at T = 2 the first is (0, log 3 / 2): phi = log(3) / 2
    z = np.array([[0.0, np.log(3.0), -np.inf], [0.0, 0.0, np.log(2.0)]])
    z[0, 2] = -50.0  # a third class that carries no probability
    y = np.array([1, 2])
    assert mean_logit_confidence(z, y) == pytest.approx(np.log(3.0) / 2, abs=1e-12)
    z2 = np.array([[0.0, np.log(3.0)]])
    assert mean_logit_confidence(z2, [1], 2.0) == pytest.approx(np.log(3.0) / 2, rel=1e-12)


def _mostly_right(seed, n=60, c=10):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(0, 1.5, (n, c))
    z[np.arange(n), y] += 3.0  # the label is the top class for most examples
    return z, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.5, 2.0, 5.0, 20.0])
def test_fit_temperature_matches_a_scipy_root(seed, target):
    z, y = _mostly_right(seed)
    want = brentq(lambda t: _phi_by_hand(z, y, t) - target, *TEMPERATURE_RANGE, xtol=1e-14)
    got = fit_temperature(z, y, target)
    assert got == pytest.approx(want, rel=1e-8)
    assert mean_logit_confidence(z, y, got) == pytest.approx(target, abs=1e-8)


def test_fit_temperature_against_a_grid_and_at_the_ends():
    z, y = _mostly_right(3)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 20001))
    target = 1.5
    best = grid[np.argmin([abs(_phi_by_hand(z, y, t) - target) for t in grid])]
    assert fit_temperature(z, y, target) == pytest.approx(best, rel=1e-3)
    # a target no temperature in the range reaches gives the nearest end
    assert fit_temperature(z, y, 1e6) == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-9)
    assert fit_temperature(z, y, -50.0) == pytest.approx(TEMPERATURE_RANGE[1], rel=1e-9)
    with pytest.raises(ValueError, match="target"):
        fit_temperature(z, y, np.nan)
    with pytest.raises(ValueError, match="labels must have shape"):
        fit_temperature(z, y[:-1], 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, int), 0.5)


def test_fit_temperature_takes_the_crossing_nearest_one():
    # a misclassified example (label 1, logits (1, 0, -10)): its phi rises from -log 2 as
    # T falls from infinity, then falls to -infinity; -0.5 is crossed near T = 2 and 20
    z, y = np.array([[1.0, 0.0, -10.0]]), np.array([1])
    ts = np.exp(np.linspace(np.log(1e-2), np.log(1e2), 200001))
    vals = np.array([_phi_by_hand(z, y, t) for t in ts]) + 0.5
    roots = ts[np.flatnonzero(np.sign(vals[:-1]) != np.sign(vals[1:]))]
    assert roots.size == 2
    nearest = roots[np.argmin(np.abs(np.log(roots)))]
    assert 1.5 < nearest < 2.5
    assert fit_temperature(z, y, -0.5) == pytest.approx(nearest, rel=1e-4)


def test_scaling_the_head_divides_the_logits_by_hand():
    model = _two_layer()
    params, state = model.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    head = find_head(model, params, state, jnp.asarray(x))
    assert jax.tree_util.keystr(head) == "['head']"
    t = 2.5
    scaled = scale_head(params, head, 1.0 / t)
    # by hand: relu(x W1 + b1) W2 + b2, then / T
    p = jax.tree.map(np.asarray, params)
    h = np.maximum(x @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0.0)
    want = (h @ p["head"]["kernel"] + p["head"]["bias"]) / t
    np.testing.assert_allclose(np.asarray(model.logits(scaled, state, x)), want, rtol=1e-5)
    np.testing.assert_array_equal(scaled["hidden"]["kernel"], params["hidden"]["kernel"])
    np.testing.assert_array_equal(params["head"]["kernel"], p["head"]["kernel"])  # not modified


def test_the_head_of_the_audit_models_is_found():
    cnn = audit.build_model(audit.load_protocol("digits10"))
    mlp = audit.build_model(audit.load_protocol("digits_small"))
    x = jnp.ones((2, 8, 8, 1), jnp.float32)
    for model, name in ((cnn, "['Dense_1']"), (mlp, "['head']")):
        params, state = model.init(jax.random.key(1))
        assert jax.tree_util.keystr(find_head(model, params, state, x)) == name


def test_a_model_without_a_linear_head_is_refused():
    class NoHead(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return jnp.tanh(nn.Dense(3)(x))  # the logits are not linear in the last layer

    model = shs.linen_model(NoHead(), jnp.zeros((1, 4), jnp.float32))
    params, state = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match="calibration='none'"):
        find_head(model, params, state, jnp.ones((3, 4)))


def test_calibration_reads_only_the_two_models_and_held_out_inputs():
    names = list(inspect.signature(calibrate_temperature).parameters)
    assert names == [
        "model",
        "params",
        "model_state",
        "original_params",
        "original_state",
        "data",
        "batch_size",
    ]
    model = _two_layer()
    original, state = model.init(jax.random.key(0))
    unlearned = jax.tree.map(lambda a: 0.3 * a, original)  # an under-confident copy
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (64, 4)).astype(np.float32)
    y = np.asarray(model.logits(original, state, x)).argmax(1)  # labels the original fits
    y[:8] = (y[:8] + 1) % 3  # and a few it does not
    data = {"image": x, "label": y}
    calibrated, info = calibrate_temperature(
        model, unlearned, state, original_params=original, original_state=state, data=data
    )
    z_o = np.asarray(model.logits(original, state, x))
    z_u = np.asarray(model.logits(unlearned, state, x))
    z_c = np.asarray(model.logits(calibrated, state, x))
    assert info["logit_confidence_original"] == pytest.approx(_phi_by_hand(z_o, y))
    assert info["logit_confidence_before"] < info["logit_confidence_original"]
    assert _phi_by_hand(z_c, y) == pytest.approx(info["logit_confidence_original"], 1e-4)
    assert info["temperature"] < 1.0
    np.testing.assert_allclose(z_c, z_u / info["temperature"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(z_c.argmax(1), z_u.argmax(1))
    with pytest.raises(ValueError, match="calibration_data"):
        calibrate_temperature(
            model, unlearned, state, original_params=original, original_state=state, data=x
        )


def test_the_setting_is_opt_in_and_checked():
    assert flat_defaults()["calibration"] == "none"
    assert from_flat(calibration="temperature")["calibration"] == CalibrationSettings("temperature")
    with pytest.raises(ValueError, match="calibration must be one of"):
        from_flat(calibration="platt")


def _tiny_request():
    split = shs.data.load_digits10("random10", 0)
    retain = {k: v[:96] for k, v in split.retain.items()}
    forget = {k: v[:32] for k, v in split.forget.items()}
    return split, retain, forget


def test_scissorhands_calibrates_on_the_data_it_is_given():
    model = _two_layer_digits()
    params, state = model.init(jax.random.key(0))
    split, retain, forget = _tiny_request()
    held_out = {k: v[:50] for k, v in split.test.items()}
    common = dict(retain=retain, forget=forget, key=jax.random.key(2), epochs=1, batch_size=32)
    plain = shs.baselines.METHODS["scissorhands"](model, params, state, **common)
    calibrated = shs.baselines.METHODS["scissorhands"](
        model, params, state, calibration="temperature", calibration_data=held_out, **common
    )
    assert all(e["epoch"] != "calibration" for e in plain.log)  # the default: nothing
    entry = calibrated.log[-1]
    assert entry["epoch"] == "calibration"
    # the same trim and repair, then only the head divided by T
    untimed = [{k: v for k, v in e.items() if not k.endswith("time_s")} for e in plain.log]
    assert [
        {k: v for k, v in e.items() if not k.endswith("time_s")} for e in calibrated.log[:-1]
    ] == untimed
    x = jnp.asarray(held_out["image"])
    z_o = np.asarray(model.logits(params, state, x))
    z_u = np.asarray(model.logits(plain.params, plain.model_state, x))
    z_c = np.asarray(model.logits(calibrated.params, calibrated.model_state, x))
    y = held_out["label"]
    assert entry["logit_confidence_original"] == pytest.approx(_phi_by_hand(z_o, y))
    np.testing.assert_allclose(z_c, z_u / entry["temperature"], rtol=1e-4, atol=1e-4)
    # without held-out data: the retain set
    on_retain = shs.baselines.METHODS["scissorhands"](
        model, params, state, calibration="temperature", **common
    )
    z_r = np.asarray(model.logits(params, state, jnp.asarray(retain["image"])))
    assert on_retain.log[-1]["logit_confidence_original"] == pytest.approx(
        _phi_by_hand(z_r, retain["label"])
    )


def _two_layer_digits():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            del train
            x = nn.relu(nn.Dense(16, name="hidden")(x.reshape(x.shape[0], -1)))
            return nn.Dense(10, name="head")(x)

    return shs.linen_model(Net(), jnp.zeros((1, 8, 8, 1), jnp.float32))


def test_the_audit_passes_its_test_set_and_no_retrain_output(monkeypatch):
    protocol = audit.load_protocol("digits_small")
    data = audit.make_population(protocol, 4, seed=0)
    seen = []

    def record(model, params, state, **kw):
        seen.append(kw)
        return shs.baselines.UnlearnResult(params, state, [])

    monkeypatch.setitem(shs.baselines.METHODS, "scissorhands", record)
    model = _two_layer_digits()
    params, state = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 4))
    _audit_population.unlearn_all(
        "scissorhands",
        {"calibration": "temperature"},
        model,
        (params, state),
        data,
        seed=0,
        progress=False,
    )
    for k, kw in enumerate(seen):
        assert set(kw) == {"retain", "forget", "key", "calibration", "calibration_data"}
        assert kw["calibration_data"] is data.test
        np.testing.assert_array_equal(kw["retain"]["image"], data.pool["image"][data.retains[k]])
    seen.clear()
    _audit_population.unlearn_all(
        "scissorhands", {}, model, (params, state), data, seed=0, progress=False
    )
    assert all("calibration_data" not in kw for kw in seen)


def test_bad_calibration_data_fails_before_any_work(monkeypatch):
    from scissorhands_jax import _method as method

    def boom(*args, **kwargs):
        raise AssertionError("the calibration's input must be checked before the trim")

    monkeypatch.setattr(method, "_trim_classifier", boom)
    model = _two_layer_digits()
    params, state = model.init(jax.random.key(0))
    _, retain, forget = _tiny_request()
    common = dict(retain=retain, forget=forget, key=jax.random.key(2), calibration="temperature")
    for bad, match in (
        (retain["image"], "calibration_data must be a dict"),
        ({"pixels": retain["image"], "label": retain["label"]}, "under \\('image', 'label'\\)"),
        ({"image": retain["image"]}, "with keys \\['image'\\]"),
        ({k: v[:0] for k, v in retain.items()}, "holds no examples"),
    ):
        with pytest.raises(ValueError, match=match):
            shs.baselines.METHODS["scissorhands"](
                model, params, state, calibration_data=bad, **common
            )
