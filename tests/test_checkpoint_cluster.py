"""Checkpoints on a cluster: the shard-wise digest, a job killed with SIGKILL (even inside
an asynchronous save) that resumes by itself, and a save on SIGTERM (preemption)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scissorhands_jax._checkpoint import (
    Checkpoints,
    PreemptionGuard,
    check_directory,
    preemption_requested,
)
from scissorhands_jax._tree_digest import _shard_sums, tree_digest


def test_shard_sums_add_up_over_any_partition():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.int8, np.uint16, jnp.bfloat16):
        x = rng.normal(size=(6, 5, 4)).astype(dtype)
        whole = _shard_sums(x, (slice(None),) * 3, x.shape)
        for cuts in ([(0, 6)], [(0, 1), (1, 4), (4, 6)]):
            for cols in ([(0, 5)], [(0, 2), (2, 5)]):
                parts = [
                    _shard_sums(
                        x[r0:r1, c0:c1], (slice(r0, r1), slice(c0, c1), slice(0, 4)), x.shape
                    )
                    for r0, r1 in cuts
                    for c0, c1 in cols
                ]
                assert tuple(sum(p[i] for p in parts) % 2**64 for i in range(2)) == whole


def test_a_value_every_process_holds_is_counted_once_in_a_job(monkeypatch):
    # a host array, or an array on one process's own device, is the same on every process
    # of a job: process 0 alone adds it, so the digest does not depend on the job's size
    from scissorhands_jax._tree_digest import _leaf_sums

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    whole = _shard_sums(x, (slice(None),) * 2, x.shape)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    for leaf in (x, jnp.asarray(x)):
        monkeypatch.setattr(jax, "process_index", lambda: 0)
        assert _leaf_sums(leaf) == whole
        monkeypatch.setattr(jax, "process_index", lambda: 1)
        assert _leaf_sums(leaf) == (0, 0)


def test_in_a_job_a_process_local_restore_target_becomes_a_copy_on_every_device(monkeypatch):
    from jax.sharding import NamedSharding, PartitionSpec

    from scissorhands_jax._checkpoint import _abstract

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    target = _abstract({"w": jnp.ones(3), "b": np.zeros(2, np.int32)})
    for leaf in target.values():
        assert isinstance(leaf.sharding, NamedSharding)
        assert leaf.sharding.spec == PartitionSpec()
        assert set(leaf.sharding.device_set) == set(jax.devices())


def test_digest_changes_with_any_single_value_path_or_dtype():
    base = {"w": np.arange(24, dtype=np.float32).reshape(4, 6), "n": np.int8([1, 2, 3])}
    seen = {tree_digest(base)}
    for i in range(24):  # every position of w, one at a time
        w = base["w"].copy()
        w.flat[i] = np.nextafter(w.flat[i], np.float32(1e9))
        seen.add(tree_digest({**base, "w": w}))
    swapped = base["w"].copy()
    swapped.flat[[0, 1]] = swapped.flat[[1, 0]]  # same values, other positions
    seen.add(tree_digest({**base, "w": swapped}))
    seen.add(tree_digest({"v": base["w"], "n": base["n"]}))
    seen.add(tree_digest({**base, "n": base["n"].astype(np.uint8)}))
    assert len(seen) == 28
    assert tree_digest(base) == tree_digest(jax.tree.map(jnp.asarray, base))


def test_checkpoints_of_the_sha256_era_still_restore(tmp_path):
    tree = {"w": jnp.arange(6.0), "b": jnp.ones(2, jnp.int32)}
    ck = Checkpoints(tmp_path / "ck", identity={"m": 1})
    ck.save(1, tree)
    ck.close()
    meta_file = tmp_path / "ck" / "1" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    old = hashlib.sha256()  # the former digest: path, dtype, shape and bytes per leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf)
        old.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}".encode())
        old.update(arr.tobytes())
    del meta["digest"]
    meta_file.write_text(json.dumps({**meta, "sha256": old.hexdigest()}))
    again = Checkpoints(tmp_path / "ck", identity={"m": 1})
    restored, _ = again.restore(tree)
    np.testing.assert_array_equal(restored["w"], tree["w"])
    meta_file.write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(Exception, match="do not match the saved digest"):
        again.restore(tree)
    again.close()


def test_preemption_guard_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard():
        assert not preemption_requested()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert preemption_requested()
    assert signal.getsignal(signal.SIGTERM) == before


CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    import jax, jax.numpy as jnp, numpy as np
    from scissorhands_jax._checkpoint import Checkpoints, PreemptionGuard, preemption_requested
    from scissorhands_jax.data import ImageSource, ImageTable, Normalization
    from scissorhands_jax._resumable import TrainState, step_decay_sgd
    from scissorhands_jax._training import train_step

    directory, out, mode = sys.argv[1:4]

    def loss(params, state, batch, train):
        x = batch["image"].reshape(len(batch["label"]), -1)
        logp = jax.nn.log_softmax(x @ params["w"] + params["b"])
        return -jnp.mean(logp[jnp.arange(len(batch["label"])), batch["label"]]), state

    rng = np.random.default_rng(0)
    table = ImageTable(rng.integers(0, 256, (40, 6, 6, 3), np.uint8), rng.integers(0, 4, 40))
    norm = Normalization((0.5,) * 3, (0.25,) * 3)
    source = ImageSource(table, np.arange(40), 8, norm, augment="crop_flip", pad=1)
    per = source.num_batches
    tx = step_decay_sgd(0.05, steps_per_epoch=per, milestones=[1], gamma=0.1)
    params = {"w": jnp.zeros((108, 4)), "b": jnp.zeros(4)}
    filler = {"pad": jnp.zeros((256, 1024))}  # a save that takes a moment
    state = TrainState(0, params, filler, tx.init(params))
    ck = Checkpoints(directory, identity={"toy": 1}, keep=2)
    if ck.latest_step() is not None:
        tree, _ = ck.restore(state.tree())
        state = TrainState(ck.latest_step(), **tree)
        print("resumed at", state.step, flush=True)
    one_step = train_step(loss, tx)
    key, total, batches = jax.random.key(3), 3 * per, None
    with PreemptionGuard():
        while state.step < total:
            epoch, i = divmod(state.step, per)
            if batches is None or i == 0:
                batches = source.batches(jax.random.fold_in(key, epoch), i)
            state, _ = one_step(state, next(batches))
            step = state.step
            if step % 2 == 0 or preemption_requested():
                ck.save(step, state.tree())
            if mode == f"kill:{step}":  # inside the asynchronous save just started
                os.kill(os.getpid(), signal.SIGKILL)
            if preemption_requested():
                ck.wait()
                print("preempted at", step, flush=True)
                sys.exit(0)
            if mode == "term":
                print("step", step, flush=True)
                time.sleep(0.3)
    ck.close()
    np.savez(out, *[np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state))])
    print("done", flush=True)
    """
)


def _child(tmp_path, mode, out="out.npz", wait=True):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, str(script), str(tmp_path / "ck"), str(tmp_path / out), mode]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


def _same_bits(a, b):
    with np.load(a) as x, np.load(b) as y:
        assert len(x.files) == len(y.files)
        for name in x.files:
            assert x[name].dtype == y[name].dtype and np.array_equal(x[name], y[name])


@pytest.mark.slow
def test_a_killed_job_resumes_by_itself_bit_identical(tmp_path):
    (tmp_path / "ref").mkdir()
    code, out, err = _child(tmp_path / "ref", "run")
    assert code == 0, err
    code, _, err = _child(tmp_path, "kill:6")
    assert code == -signal.SIGKILL
    # kill -9 again, after the first resume, before any new save commits
    code, out, err = _child(tmp_path, "kill:8")
    assert code == -signal.SIGKILL and "resumed at" in out
    left = sorted(p.name for p in (tmp_path / "ck").iterdir())
    code, out, err = _child(tmp_path, "run")
    assert code == 0 and "done" in out, err
    resumed_from = int(out.split("resumed at ")[1].split()[0])
    assert resumed_from in (4, 6, 8)
    if any("orbax-checkpoint-tmp" in name for name in left):  # the usual case
        assert "is an interrupted save" in err and "deleted the unfinished" in err
    assert not any("tmp" in p.name for p in (tmp_path / "ck").iterdir())
    _same_bits(tmp_path / "out.npz", tmp_path / "ref" / "out.npz")


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_boundary(tmp_path):
    (tmp_path / "ref").mkdir()
    code, _, err = _child(tmp_path / "ref", "run")
    assert code == 0, err
    proc = _child(tmp_path, "term", wait=False)
    for line in proc.stdout:
        if line.startswith("step 3"):
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    stopped = int(stdout.split("preempted at ")[1].split()[0])
    assert stopped in (3, 4) and stopped in check_directory(tmp_path / "ck")
    code, out, err = _child(tmp_path, "run")
    assert code == 0 and f"resumed at {stopped}" in out, err
    _same_bits(tmp_path / "out.npz", tmp_path / "ref" / "out.npz")


SHARDED = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from scissorhands_jax._tree_digest import tree_digest
    from scissorhands_jax._checkpoint import Checkpoints

    mesh = jax.make_mesh((4,), ("data",))
    host = {"w": np.arange(64, dtype=np.float32).reshape(8, 8), "b": np.arange(3, dtype=np.float32)}
    split = NamedSharding(mesh, P("data"))
    rep = NamedSharding(mesh, P())
    tree = {"w": jax.device_put(host["w"], split), "b": jax.device_put(host["b"], rep)}
    assert tree_digest(tree) == tree_digest(host)  # replicas counted once, any layout
    ck = Checkpoints(sys.argv[1], identity={"m": 1})
    ck.save(1, tree)
    ck.wait()
    other = NamedSharding(mesh, P(None, "data"))  # restore into another layout
    back, _ = ck.restore({"w": jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=other),
                          "b": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=rep)})
    ck.close()
    assert back["w"].sharding == other and back["b"].sharding == rep
    assert np.array_equal(np.asarray(back["w"]), host["w"])
    print("ok")
    """
)


@pytest.mark.slow
def test_sharded_digest_and_restore_into_target_shardings(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ck")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
