"""The opt-in projection schedule of the repair (``project_epochs``): projected steps
counted per epoch against a hand count."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax._repair import projects_in_epoch, repair
from scissorhands_jax._settings import ProjectionSettings, RepairSettings, flat_defaults, from_flat
from scissorhands_jax.data import array_source


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        return nn.Dense(3)(nn.relu(nn.Dense(6)(x)))


def _run(projection: ProjectionSettings, epochs: int = 3):
    model = shs.linen_model(_Net(), jnp.zeros((1, 4), jnp.float32))
    params, state = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)

    def data(n):
        return {
            "image": rng.normal(size=(n, 4)).astype(np.float32),
            "label": rng.integers(0, 3, n).astype(np.int32),
        }

    # retain: 40 examples in batches of 8 (5 steps); forget: 24 (3 joint steps per epoch)
    _, _, log = repair(
        model.loss,
        params,
        state,
        retain=array_source(data(40), 8),
        forget=array_source(data(24), 8),
        key=jax.random.key(1),
        eligible=jax.tree.map(lambda _: True, params),
        settings=RepairSettings(lr=1e-2, epochs=epochs),
        projection=projection,
    )
    return log


@pytest.mark.parametrize(
    ("every", "project_epochs", "want"),
    [
        (1, None, [3, 3, 3]),  # the method as published: every joint step of every epoch
        (1, 1, [3, 0, 0]),
        (1, 2, [3, 3, 0]),
        (2, 2, [1, 1, 0]),  # joint steps 1, 2, 3: only step 2 has i % 2 == 0
        (1, 5, [3, 3, 3]),  # more than the repair's epochs: all of them
    ],
)
def test_projected_steps_per_epoch_match_a_hand_count(every, project_epochs, want):
    # the orthogonal projection acts on every step it is given (GEM only on a conflict)
    log = _run(
        ProjectionSettings(
            projection="orthogonal", project_every=every, project_epochs=project_epochs
        )
    )
    assert [e["joint_steps"] for e in log] == [3, 3, 3]
    assert [e["retain_steps"] for e in log] == [2, 2, 2]
    assert [e["projected_steps"] for e in log] == want


def test_later_epochs_build_no_memory():
    assert [projects_in_epoch(ProjectionSettings(project_epochs=2), e) for e in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert all(projects_in_epoch(ProjectionSettings(), e) for e in range(50))
    assert not projects_in_epoch(ProjectionSettings(projection="none"), 0)


def test_the_schedule_is_opt_in_and_checked():
    assert flat_defaults()["project_epochs"] is None
    assert from_flat(project_epochs=2)["projection"].project_epochs == 2
    assert from_flat(project_epochs=np.int64(3))["projection"].project_epochs == 3
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="project_epochs must be an integer >= 1"):
            from_flat(project_epochs=bad)


def test_the_default_schedule_is_the_published_run():
    published = _run(ProjectionSettings(), epochs=2)
    explicit = _run(ProjectionSettings(project_epochs=None), epochs=2)
    drop = ("time_s",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in published] == [
        {k: v for k, v in e.items() if k not in drop} for e in explicit
    ]


def test_saved_runs_keep_their_identity_unless_a_variant_is_asked():
    from types import SimpleNamespace

    from scissorhands_jax.experiment import pipeline
    from scissorhands_jax.experiment.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "scissorhands_jax/configs/cifar10_random10.py")
    split = SimpleNamespace(
        indices=SimpleNamespace(num_train=10, val=np.arange(3), forget=np.arange(2))
    )
    before = pipeline.identity(cfg, "scissorhands", split)["unlearn"]
    assert "project_epochs" not in before and "calibration" not in before
    cfg["unlearn"].update(project_epochs=2, calibration="temperature")
    asked = pipeline.identity(cfg, "scissorhands", split)["unlearn"]
    assert (asked["project_epochs"], asked["calibration"]) == (2, "temperature")
    assert {k: v for k, v in asked.items() if k not in ("project_epochs", "calibration")} == before
