"""Orbax checkpoints: round trip, bit-identical resume, and refusal of anything doubtful."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO

from scissorhands_jax._checkpoint import CheckpointError, Checkpoints, check_directory
from scissorhands_jax._loop import TrainState
from scissorhands_jax._resumable import fit_resumable, step_decay_sgd
from scissorhands_jax.data import ImageSource, ImageTable, Normalization
from scissorhands_jax.models import ResNet, linen_model

IDENTITY = {"role": "original", "model": {"width": 4}}
# orbax's parallel reads of a damaged checkpoint leave asyncio callbacks that fire after
# their event loop closed; the refusal itself is what these tests check
_ORBAX_FAILED_READS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def setup():
    """A two-stage ResNet with BatchNorm on 8x8 images, and an augmented loader."""
    model = linen_model(ResNet((1, 1), 4, True, 4), jnp.zeros((1, 8, 8, 3)))
    rng = np.random.default_rng(0)
    table = ImageTable(rng.integers(0, 256, (40, 8, 8, 3), np.uint8), rng.integers(0, 4, 40))
    norm = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    source = ImageSource(table, np.arange(40), 16, norm, augment="crop_flip", pad=1)
    # 3 batches (16, 16, 8) per epoch; the rate drops at the start of epoch 1 (step 3)
    tx = step_decay_sgd(0.05, steps_per_epoch=source.num_batches, milestones=[1], gamma=0.1)
    params, state = model.init(jax.random.key(0))
    return model, source, tx, TrainState(0, params, state, tx.init(params))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_same_bits(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def test_round_trip_is_exact(setup, tmp_path):
    _, _, _, state = setup
    ck = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    ck.save(5, state.tree(), info={"epoch": 1.5})
    ck.wait()
    assert ck.steps() == [5]
    tree, info = ck.restore(state.tree())
    ck.close()
    _assert_same_bits(tree, state.tree())
    assert info == {"epoch": 1.5}
    assert jax.tree.structure(tree) == jax.tree.structure(state.tree())


def test_resume_after_k_steps_is_bit_identical(setup, tmp_path):
    model, source, tx, fresh = setup
    key = jax.random.key(7)
    kwargs = dict(key=key, epochs=3, tx=tx)
    whole, log = fit_resumable(model.loss, fresh, source, **kwargs)
    assert whole.step == 9 and [e["steps"] for e in log] == [3, 3, 3]

    ck = Checkpoints(tmp_path / "ck", identity=IDENTITY, keep=2)

    def save(state, info):
        ck.save(state.step, state.tree(), info=info)

    first, _ = fit_resumable(
        model.loss, fresh, source, stop_step=2, save=save, save_every=1, **kwargs
    )
    ck.wait()
    assert first.step == 2 and ck.steps() == [1, 2]
    ck.close()
    # a fresh process: open the directory, restore the latest step, continue
    again = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    tree, info = again.restore(fresh.tree())
    assert info == {"epoch": 2 / 3, "final": False}
    resumed, log = fit_resumable(
        model.loss, TrainState(again.latest_step(), **tree), source, **kwargs
    )
    again.close()
    assert resumed.step == 9 and [e["steps"] for e in log] == [1, 3, 3]
    _assert_same_bits(resumed.params, whole.params)
    _assert_same_bits(resumed.model_state, whole.model_state)
    _assert_same_bits(resumed.opt_state, whole.opt_state)
    # and the run really moved: BatchNorm statistics and parameters changed
    assert not np.array_equal(_leaves(whole.params)[0], _leaves(fresh.params)[0])
    assert not np.array_equal(_leaves(whole.model_state)[0], _leaves(fresh.model_state)[0])


def test_step_schedule_matches_multistep_lr():
    tx = step_decay_sgd(
        0.1, steps_per_epoch=4, milestones=[2, 3], gamma=0.5, momentum=0.0, weight_decay=0.0
    )
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    rates = []
    for _ in range(16):
        update, state = tx.update({"w": jnp.ones(())}, state, params)
        rates.append(-float(update["w"]))
    # torch MultiStepLR stepped per epoch: 0.1 for epochs 0-1, 0.05 in 2, 0.025 from 3
    expected = [0.1] * 8 + [0.05] * 4 + [0.025] * 4
    np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_unfinished_saves_are_cleaned_up_and_logged(setup, tmp_path, caplog):
    _, _, _, state = setup
    ck = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    ck.save(1, state.tree())
    ck.save(2, state.tree())
    ck.close()
    # a save killed before orbax renamed its temporary directory
    tmp = tmp_path / "ck" / "3.orbax-checkpoint-tmp-1234"
    shutil.copytree(tmp_path / "ck" / "1", tmp)
    # a step whose item lacks its commit marker (killed while deleting, half-copied)
    (tmp_path / "ck" / "2" / "state" / "commit_success.txt").unlink()
    assert check_directory(tmp_path / "ck") == [1]  # listing deletes nothing
    caplog.clear()
    with caplog.at_level("WARNING", logger="scissorhands_jax._checkpoint"):
        again = Checkpoints(tmp_path / "ck", identity=IDENTITY)
        # a reader (no save) uses only step 1 and leaves the rest alone: it may be a
        # save still in progress in another process
        assert again.steps() == [1] and again.latest_step() == 1
        tree, _ = again.restore(state.tree())
        _assert_same_bits(tree, state.tree())
        assert tmp.exists() and (tmp_path / "ck" / "2").exists()
        again.save(2, state.tree())  # the first save deletes them, then saves
        again.wait()
    logged = caplog.text
    assert "orbax-checkpoint-tmp-1234 is an interrupted save" in logged
    assert "state has no commit_success.txt" in logged
    assert "deleted the unfinished checkpoint" in logged
    assert not tmp.exists()
    assert again.steps() == [1, 2]
    again.close()
    assert check_directory(tmp_path / "ck") == [1, 2]


def test_corrupt_checkpoints_are_refused(setup, tmp_path):
    _, _, _, state = setup
    ck = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    ck.save(3, state.tree())
    ck.close()
    data = [p for p in (tmp_path / "ck" / "3" / "state").rglob("*") if p.parent.name == "d"]
    assert data
    for p in data:
        blob = bytearray(p.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        p.write_bytes(bytes(blob))
    again = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    with pytest.raises(CheckpointError, match=r"3 is corrupt and was not used.*rm -r"):
        again.restore(state.tree())
    again.close()


def test_digest_catches_bytes_orbax_would_accept(setup, tmp_path):
    _, _, _, state = setup
    ck = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    ck.save(4, state.tree())
    ck.close()
    meta_file = tmp_path / "ck" / "4" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["digest"] = "0" * 64  # the stored arrays no longer match what was saved
    meta_file.write_text(json.dumps(meta))
    again = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    with pytest.raises(CheckpointError, match="do not match the saved digest"):
        again.restore(state.tree())
    again.close()


def test_mismatched_checkpoints_are_refused(setup, tmp_path):
    _, _, _, state = setup
    ck = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    ck.save(2, state.tree())
    ck.close()
    other = Checkpoints(tmp_path / "ck", identity={**IDENTITY, "model": {"width": 8}})
    with pytest.raises(CheckpointError, match=r"different run: model.width: saved 4, now 8"):
        other.restore(state.tree())
    other.close()
    same = Checkpoints(tmp_path / "ck", identity=IDENTITY)
    wrong = state.tree()
    wrong["params"] = {
        **wrong["params"],
        "fc": {"kernel": jnp.zeros((16, 5)), "bias": jnp.zeros(5)},
    }
    with pytest.raises(CheckpointError, match=r"does not match the model.*\['fc'\]\['bias'\]"):
        same.restore(wrong)
    with pytest.raises(CheckpointError, match="no checkpoint of step 9"):
        same.restore(state.tree(), step=9)
    same.close()
    empty = Checkpoints(tmp_path / "empty", identity=IDENTITY)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        empty.restore(state.tree())
    empty.close()


def test_fit_resumable_argument_errors(setup):
    model, source, tx, fresh = setup
    with pytest.raises(ValueError, match="num_batches"):
        fit_resumable(
            model.loss, fresh, lambda key: iter(()), key=jax.random.key(0), epochs=1, tx=tx
        )
    late = fresh._replace(step=99)
    with pytest.raises(ValueError, match="cannot run from step 99"):
        fit_resumable(model.loss, late, source, key=jax.random.key(0), epochs=1, tx=tx)


def test_nan_loss_stops_training(setup):
    model, source, _, fresh = setup
    tx = optax.sgd(1e30)
    state = TrainState(0, fresh.params, fresh.model_state, tx.init(fresh.params))
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit_resumable(model.loss, state, source, key=jax.random.key(0), epochs=2, tx=tx)


def test_a_finite_divergence_stops_training_before_any_save(setup):
    # a loss thousands of times its start, though finite, once went on to be saved and
    # logged as a trained model
    model, source, _, fresh = setup
    tx = optax.sgd(50.0, momentum=0.9)
    state = TrainState(0, fresh.params, fresh.model_state, tx.init(fresh.params))
    saved = []
    with pytest.raises(
        FloatingPointError, match=r"diverged at step \d+.*lower the learning rate"
    ) as err:
        fit_resumable(
            model.loss, state, source, key=jax.random.key(0), epochs=3, tx=tx,
            save=lambda st, info: saved.append(st.step), save_every=1,
        )  # fmt: skip
    diverged = int(re.search(r"diverged at step (\d+)", str(err.value)).group(1))
    assert saved == list(range(1, diverged))  # every step before it, none from it on


# --------------------------------------------------------------- damage said in one line


def test_truncated_checkpoint_data_is_one_line(tmp_path):
    tree = {f"w{i}": jnp.full((64, 64), float(i)) for i in range(8)}
    with Checkpoints(tmp_path / "ck", identity={"run": 1}) as ck:
        ck.save(1, tree)
    files = [p for p in (tmp_path / "ck" / "1" / "state").rglob("*") if p.parent.name == "d"]
    assert files
    for path in files:  # every data file cut in half, as a copy that ran out of space
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code = textwrap.dedent(
        """
        import sys, time
        import jax.numpy as jnp
        from scissorhands_jax._checkpoint import CheckpointError, Checkpoints
        like = {f"w{i}": jnp.zeros((64, 64)) for i in range(8)}
        with Checkpoints(sys.argv[1], identity={"run": 1}) as ck:
            try:
                ck.restore(like)
            except CheckpointError as err:
                print(f"error: {err}", file=sys.stderr, flush=True)
        time.sleep(0.5)  # late callbacks of the aborted reads would be reported by now
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ck")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is corrupt and was not used" in lines[0], done.stderr
