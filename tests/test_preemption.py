"""A preemption notice (SIGTERM) saves the training state and the run continues from it
bit-identically; the loop's callback sees every log entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax._loop import TrainState
from scissorhands_jax._preemption import EXIT_PREEMPTED, PreemptionGuard, preemption_requested


def _loss(params, state, batch, train):
    pred = batch["x"] @ params["w"]
    return jnp.mean((pred - batch["y"]) ** 2), state


def _setup():
    rng = np.random.default_rng(0)
    data = {
        "x": rng.normal(size=(40, 3)).astype(np.float32),
        "y": rng.normal(size=(40, 2)).astype(np.float32),
    }
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    tx = shs.sgd(0.05)
    return shs.data.array_source(data, 8), TrainState(0, params, {}, tx.init(params)), tx


class _SignalAfter:
    """A batch source that sends this process SIGTERM after ``n`` batches in total."""

    def __init__(self, source, n):
        self.source, self.n, self.seen = source, n, 0
        self.num_batches = source.num_batches

    def __call__(self, key):
        for batch in self.source(key):
            self.seen += 1
            if self.seen == self.n:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def test_sigterm_saves_and_the_resumed_run_is_bit_identical():
    source, state, tx = _setup()
    key = jax.random.key(3)
    full, _ = shs.fit_resumable(_loss, state, source, key=key, epochs=3, tx=tx)

    saved = []
    with PreemptionGuard():
        stopped, log = shs.fit_resumable(
            _loss, state, _SignalAfter(source, 7), key=key, epochs=3, tx=tx,
            save=lambda st, info: saved.append((st.step, jax.device_get(st.params), info)),
        )  # fmt: skip
        assert preemption_requested()
    assert not preemption_requested()  # the request belonged to the guarded block
    # it stopped at the step after the signal, saved exactly there, and logged it
    assert stopped.step == 7 and [s for s, _, _ in saved] == [7]
    assert log[-1]["step"] == 7 and not saved[0][2]["final"]
    resumed, _ = shs.fit_resumable(_loss, stopped, source, key=key, epochs=3, tx=tx)
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(full.params["w"]))


def test_without_a_guard_sigterm_keeps_its_default_meaning():
    # the guard restores the previous handler on exit
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_callback_sees_every_log_entry():
    source, state, tx = _setup()
    seen = []
    _, log = shs.fit_resumable(
        _loss, state, source, key=jax.random.key(0), epochs=2, tx=tx, log_every=2,
        callback=lambda step, entry: seen.append((step, entry["loss"])),
    )  # fmt: skip
    assert seen == [(e["step"], e["loss"]) for e in log] and len(seen) == 5


CONFIG = str(Path(__file__).resolve().parents[1] / "scissorhands_jax/configs/digits10_random10.py")


@pytest.mark.slow
def test_train_command_exits_75_on_sigterm_and_resumes_to_the_same_model(tmp_path):
    from scissorhands_jax import cli
    from scissorhands_jax.experiment import pipeline as pipe
    from scissorhands_jax.experiment.config import load_config

    args = [CONFIG, "--smoke", "--only", "original", "--no-progress",
            "--set", "train.epochs=60", "--set", "train.checkpoint_every=100000"]  # fmt: skip
    assert cli.main(["train", *args, "--out", str(tmp_path / "whole")]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "scissorhands_jax", "train", *args, "--out", str(tmp_path / "cut")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    marker = tmp_path / "cut" / "original"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline:  # training has started
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, out
    assert "preempted" in out
    assert cli.main(["train", *args, "--out", str(tmp_path / "cut"), "--resume"]) == 0

    cfg = load_config(CONFIG, smoke=True, overrides=["train.epochs=60"])
    split = pipe.build_split(cfg, progress=False)
    model = pipe.build_model(cfg, split.dataset)
    whole, _ = pipe.load_trained(tmp_path / "whole", "original", cfg, split, model)
    cut, _ = pipe.load_trained(tmp_path / "cut", "original", cfg, split, model)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(cut), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
