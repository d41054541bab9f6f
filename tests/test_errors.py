"""Bad input fails early with a message that names the problem and what to do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scissorhands_flat

import scissorhands_jax as shs
from scissorhands_jax import cli


@pytest.fixture(scope="module")
def split():
    return shs.data.load_digits10("random10", 0)


def _run(model, params, state, split, **kw):
    args = dict(
        retain=split.retain,
        forget=split.forget,
        key=jax.random.key(0),
        eligible="all_but_first_conv",
        epochs=1,
        batch_size=64,
        progress=False,
    )
    args.update(kw)
    return scissorhands_flat(model, params, state, **args)


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


def test_memory_mismatch_in_projection():
    tx = shs.gem_projection()
    g = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = tx.init(g)
    with pytest.raises(ValueError, match="structure"):
        tx.update(g, state, memory={"a": jnp.ones((1, 3))})
    with pytest.raises(ValueError, match="does not match"):
        tx.update(g, state, memory={"a": jnp.ones((1, 4)), "b": jnp.ones((1, 2, 2))})
    with pytest.raises(ValueError, match="disagree on the number of memories"):
        tx.update(g, state, memory={"a": jnp.ones((1, 3)), "b": jnp.ones((2, 2, 2))})


def test_cli_reports_bad_input_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--out", str(out), "--set", "unlearn.sparsity=1.5", "--seeds", "0"]
    code = cli.main([*argv, "--scenarios", "random10", "--smoke", "--no-progress"])
    assert code == 2
    assert "--set unlearn.sparsity=1.5: unlearn.sparsity must be" in capsys.readouterr().err
    assert not out.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli.main(["demo", "--out", str(a_file), "--no-progress"]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("unlearn.lr=5e-3x", r"unlearn.lr must be a number .* got '5e-3x'"),
        ("unlearn.epochs=2.5", "unlearn.epochs must be an integer"),
        ("unlearn.augment=1", "unlearn.augment must be true or false"),
        ("unlearn.eligible=0.5", "unlearn.eligible must be a string"),
    ],
)
def test_config_overrides_are_type_checked_at_once(text, pattern):
    from scissorhands_jax.experiment.config import load_config

    with pytest.raises(ValueError, match=pattern):
        load_config("cifar10_random10", overrides=[text])
    good = load_config("cifar10_random10", overrides=["unlearn.lr=5e-3"])
    assert good["unlearn"]["lr"] == 5e-3


def test_settings_refuse_unknown_names_and_bad_values():
    from scissorhands_jax._settings import flat_defaults, from_flat

    with pytest.raises(ValueError, match="unknown setting"):
        from_flat(sparsty=0.9)
    with pytest.raises(ValueError, match="projection must be one of"):
        from_flat(projection="gen")
    with pytest.raises(ValueError, match="update_stats needs saliency_train_mode"):
        shs.TrimSettings(update_stats=True)
    # every flat default is the dataclass default (one copy of each)
    objs = from_flat()
    assert objs["trim"] == shs.TrimSettings() and objs["repair"] == shs.RepairSettings()
    assert flat_defaults()["sparsity"] == shs.TrimSettings().sparsity == 0.97
