"""The settings dataclasses (scissorhands_jax._settings): types and ranges checked on
construction, NumPy and JAX scalars taken as Python numbers, and the flat names of the
config sections turned into the dataclasses with one copy of each default."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs


@pytest.mark.parametrize(
    "cls, field, value, pattern",
    [
        (shs.RepairSettings, "momentum", 1.5, r"momentum must be < 1.0, got 1.5; SGD"),
        (shs.RepairSettings, "momentum", -0.1, "momentum must be >= 0"),
        (shs.RepairSettings, "lam", -0.5, "lam must be >= 0"),
        (shs.RepairSettings, "lam", float("nan"), "lam must be a finite number, got nan"),
        (shs.RepairSettings, "weight_decay", -1e-4, "weight_decay must be >= 0"),
        (shs.RepairSettings, "lr", "5e-3", r"lr must be a finite number, got '5e-3'"),
        (shs.RepairSettings, "lr", True, "lr must be a finite number, got True"),
        (shs.RepairSettings, "lr", jnp.ones(2), "lr must be a finite number"),
        (shs.ProjectionSettings, "margin", -0.5, "margin must be >= 0"),
        (shs.ProjectionSettings, "margin", float("inf"), "margin must be a finite number"),
        (
            shs.ProjectionSettings,
            "cumulative_memory",
            "no",
            "cumulative_memory must be True or False",
        ),
        (shs.TrimSettings, "saliency_train_mode", "yes", "saliency_train_mode must be True"),
        (shs.TrimSettings, "ties", "random", "ties must be one of"),
        (shs.TrainingSettings, "progress", "no", "progress must be True or False"),
    ],
)
def test_settings_refuse_wrong_types_and_ranges(cls, field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(**{field: value})


def test_settings_take_numpy_and_jax_scalars_as_python_numbers():
    trim = shs.TrimSettings(sparsity=jnp.float32(0.9), prune_num=np.int64(2))
    assert trim.sparsity == float(np.float32(0.9)) and type(trim.sparsity) is float
    assert trim.prune_num == 2 and type(trim.prune_num) is int
    repair = shs.RepairSettings(lr=np.float32(0.25), epochs=jnp.int32(3))
    assert (repair.lr, repair.epochs) == (0.25, 3) and type(repair.epochs) is int
    hash(repair)  # a settings object stays hashable (it keys compiled programs)
    # a settings argument that is not its dataclass is refused before any work
    with pytest.raises(TypeError, match="repair must be a RepairSettings"):
        shs.scissorhands(None, {}, retain={}, forget={}, key=None, repair={"lr": 1e-3})


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
