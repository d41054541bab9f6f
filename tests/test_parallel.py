"""Data-parallel Scissorhands: mesh helpers, and N virtual devices against one device.

The multi-device checks run in a subprocess that sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before JAX is imported (this file
run as a script), so the rest of the suite keeps its single CPU device. The subprocess
computes every quantity twice, on the default device (the reference) and placed on a
mesh, and prints the differences as JSON; the tests below assert on them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import scissorhands_from_names
from jax.sharding import NamedSharding, PartitionSpec

import scissorhands_jax as shs
from scissorhands_jax import _saliency as saliency
from scissorhands_jax import parallel

DEVICES = 8
DEVICE_COUNTS = (1, 2, 4, 8)
PARTS = ("pieces", "repair")


# ---------------------------------------------------------------- one device, in process


def test_data_mesh_over_the_default_device():
    mesh = shs.parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == jax.device_count()
    with pytest.raises(ValueError, match="empty"):
        parallel.data_mesh([])


def test_shard_batch_on_one_device_is_the_batch():
    mesh = parallel.data_mesh()
    batch = {"image": np.arange(12.0).reshape(3, 4), "label": np.array([0, 1, 2])}
    placed = parallel.shard_batch(batch, mesh)
    for k in batch:
        np.testing.assert_array_equal(np.asarray(placed[k]), batch[k])
        assert placed[k].sharding == NamedSharding(mesh, PartitionSpec("data"))
    with pytest.raises(ValueError, match="not an axis"):
        parallel.shard_batch(batch, mesh, axis="model")


def test_from_process_local_with_one_process_equals_shard_batch():
    mesh = parallel.data_mesh()
    batch = {"x": np.arange(8.0).reshape(4, 2)}
    a = parallel.from_process_local(batch, mesh)["x"]
    b = parallel.shard_batch(batch, mesh)["x"]
    assert a.shape == (4, 2) and a.sharding == b.sharding
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_local_batch_slice_covers_the_global_batch_once():
    parts = [parallel.local_batch_slice(12, process_index=p, process_count=4) for p in range(4)]
    assert parts == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    covered = np.concatenate([np.arange(12)[s] for s in parts])
    np.testing.assert_array_equal(covered, np.arange(12))
    # one process (this machine): the whole batch, and it is the main process
    assert parallel.local_batch_slice(12) == slice(0, 12)
    assert jax.process_count() == 1 and parallel.is_main_process()
    with pytest.raises(ValueError, match="multiple of 4"):
        parallel.local_batch_slice(10, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="process_index"):
        parallel.local_batch_slice(12, process_index=4, process_count=4)


def test_fsdp_spec_splits_the_largest_divisible_dimension():
    spec = parallel._fsdp_spec
    assert spec((3, 3, 256, 512), 8, "data", 1) == PartitionSpec(None, None, None, "data")
    assert spec((1000, 1024), 8, "data", 1) == PartitionSpec(None, "data")
    assert spec((1000, 10), 8, "data", 1) == PartitionSpec("data", None)
    assert spec((7, 9), 8, "data", 1) == PartitionSpec()  # nothing divisible
    assert spec((64, 64), 8, "data", 1 << 14) == PartitionSpec()  # too small to split
    assert spec((64, 64), 1, "data", 1) == PartitionSpec()  # one device


def test_sharded_source_keeps_the_batches_and_their_count():
    mesh = parallel.data_mesh()
    data = {"x": np.arange(10.0)}
    src = shs.data.array_source(data, 4)
    wrapped = parallel.sharded_source(src, mesh)
    assert wrapped.num_batches == 3 and parallel.sharded_source(wrapped, mesh) is wrapped
    key = jax.random.key(0)
    for a, b in zip(src(key), wrapped(key), strict=True):
        np.testing.assert_array_equal(a["x"], np.asarray(b["x"]))


def test_on_mesh_keeps_a_placement_already_on_the_mesh():
    mesh = parallel.data_mesh()
    tree = {"a": np.ones((4, 4), np.float32), "b": jnp.zeros(3)}
    placed = parallel.on_mesh(tree, mesh)
    assert all(x.sharding == parallel.replicated(mesh) for x in jax.tree.leaves(placed))
    again = parallel.on_mesh(placed, mesh, shard=True, min_size=1)
    assert all(x is y for x, y in zip(jax.tree.leaves(placed), jax.tree.leaves(again), strict=True))


def test_no_function_of_the_method_takes_a_mesh():
    """The mesh is placed once, by the caller; the method follows its inputs."""
    functions = [shs.connection_sensitivity, shs.forget_memory, shs.trim, shs.repair,
                 shs.scissorhands, *shs.baselines.METHODS.values()]  # fmt: skip
    for fn in functions:
        params = inspect.signature(fn).parameters
        assert "mesh" not in params and "shard_params" not in params, fn.__name__
    fields = {f.name for f in dataclasses.fields(shs.TrainingSettings)}
    assert not fields & {"mesh", "shard_params"}
    assert not hasattr(parallel, "data_parallel") and not hasattr(parallel, "current_mesh")


def test_mesh_of_names_the_mesh_a_tree_was_placed_on():
    mesh = parallel.data_mesh()
    tree = {"a": np.ones(3), "b": jnp.ones(2)}
    assert parallel.mesh_of(tree) is None  # host values and default-device arrays
    assert parallel.mesh_of({}) is None
    assert parallel.mesh_of(parallel.on_mesh(tree, mesh)) == mesh
    seen = []
    jax.jit(lambda t: seen.append(parallel.mesh_of(t)) or t)(parallel.on_mesh(tree, mesh))
    assert seen == [None]  # traced values have no placement of their own


def test_trim_runs_where_its_parameters_live():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.zeros(2)}
    forget = shs.data.array_source({"x": rng.normal(size=(8, 3)).astype(np.float32)}, 4)

    def loss(p, b):
        return jnp.mean(jnp.tanh(b["x"] @ p["w"] + p["b"]) ** 2)

    kwargs = dict(key=jax.random.key(0), eligible={"w": True, "b": False},
                  fresh=jax.tree.map(jnp.zeros_like, params),
                  settings=shs.TrimSettings(sparsity=0.5, prune_num=2))  # fmt: skip
    mesh = parallel.data_mesh()
    ref = shs.trim(loss, params, forget, **kwargs)
    got = shs.trim(loss, parallel.on_mesh(params, mesh), forget, **kwargs)
    np.testing.assert_array_equal(np.asarray(got.mask["w"]), np.asarray(ref.mask["w"]))
    np.testing.assert_allclose(np.asarray(got.params["w"]), np.asarray(ref.params["w"]))
    assert ref.mask["w"].any() and not ref.mask["w"].all()  # a real selection
    assert got.params["w"].sharding == parallel.replicated(mesh)
    assert all(parallel.mesh_of(b) == mesh for b in got.batches)  # batches followed
    assert all(parallel.mesh_of(b) is None for b in ref.batches)


def test_saliency_and_memory_with_a_one_device_mesh_equal_the_default():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    batches = [{"x": rng.normal(size=(4, 3)).astype(np.float32)} for _ in range(2)]

    def loss(p, b):
        return jnp.mean(jnp.tanh(b["x"] @ p["w"]) ** 2)

    mesh = parallel.data_mesh()
    for fn in (shs.connection_sensitivity, shs.forget_memory):
        ref, got = fn(loss, params, batches), fn(loss, parallel.on_mesh(params, mesh), batches)
        np.testing.assert_allclose(np.asarray(got["w"]), np.asarray(ref["w"]), rtol=1e-6)
        assert got["w"].sharding == parallel.replicated(mesh)


def test_device_top_k_working_memory_is_not_a_copy_of_the_scores():
    """XLA's temporary buffers for the threshold of 64 M scores (256 MB): a few chunks,
    not the uint32 copy of every leaf that a hoisted or unchunked count would hold."""
    sds = jax.ShapeDtypeStruct
    scores = {
        "conv": sds((3, 3, 512, 4096), jnp.float32),
        "dense": sds((40_000_001,), jnp.float32),  # not a multiple of the chunk
        "small": [sds((1000,), jnp.float32)] * 3,
    }
    nbytes = 4 * sum(math.prod(x.shape) for x in jax.tree.leaves(scores))
    chunkable = saliency._chunkable(scores)
    assert chunkable == (True,) * 5
    compiled = saliency._stats_and_kth.lower(scores, k=10, chunkable=chunkable).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 0.1 * nbytes


# ---------------------------------------------------------- 8 virtual devices, subprocess


@pytest.fixture(scope="module")
def multi():
    """Runs the two halves of the worker in two processes side by side; merges their
    JSON."""
    env = dict(os.environ)
    # single-threaded ops: 8 virtual devices on a few busy cores must not starve one
    # device's op while the others wait in an all-reduce (XLA aborts after 40 s)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={DEVICES}"
        + " --xla_cpu_multi_thread_eigen=false"
    )
    env["JAX_PLATFORMS"] = "cpu"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, part],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in PARTS
    ]
    out = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        out.update(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.slow
def test_subprocess_sees_eight_devices(multi):
    assert multi["device_count"] == DEVICES


@pytest.mark.slow
def test_batches_are_split_or_replicated_when_uneven(multi):
    assert multi["spec_even"] == str(PartitionSpec("data"))
    assert multi["spec_uneven"] == str(PartitionSpec())  # 12 examples on 8 devices
    assert multi["params_after_repair"] == [str(PartitionSpec())]  # still replicated


@pytest.mark.slow
def test_sharded_saliency_matches_one_device(multi):
    assert multi["saliency_rel"] < 1e-5


@pytest.mark.slow
def test_sharded_memory_matches_one_device(multi):
    assert multi["memory_rel"] < 1e-5


@pytest.mark.slow
def test_sharded_top_k_mask_equals_the_sort_reference(multi):
    # exact: no entry differs from the np.partition reference, whatever the placement
    assert multi["topk_mismatch"] == {
        "default": 0,
        "replicated": 0,
        "sharded": 0,
        "sharded_host": 0,
    }


@pytest.mark.slow
def test_top_k_of_a_split_leaf_does_not_gather_it(multi):
    # per device: at most its shard (1/8 of the leaf), not the whole leaf
    assert multi["topk_split_leaf_temp_over_leaf"] < 0.2


@pytest.mark.slow
def test_data_parallel_fit_with_sharded_params_matches_one_device(multi):
    assert multi["fit_sharded_specs"] > 1  # some leaves really were split
    assert multi["fit_max_abs"] < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("config", list(map(str, DEVICE_COUNTS)))
def test_scissorhands_on_n_devices_matches_one_device(multi, config):
    ref, got = multi["scissorhands"]["reference"], multi["scissorhands"][config]
    assert ref["projected_steps"] > 0  # the projection is exercised
    assert got["mask_mismatch"] == 0
    assert got["params_max_abs"] < 1e-5
    assert got["state_max_abs"] < 1e-5
    for k in ("joint_steps", "retain_steps", "projected_steps"):
        assert got[k] == ref[k], k
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["gem", "orthogonal"])
def test_projection_inside_pmap_matches_one_device(multi, projection):
    result = multi["pmap"][projection]
    assert result["projected_single"] == result["projected_pmap"] == 3
    assert result["max_abs"] < 1e-6
    assert result["replicas_agree"]


# --------------------------------------------------------------------- the subprocess


def _max_abs(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        if np.size(x)
    )


def _max_rel(a, b) -> float:
    scale = max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(a) if np.size(x))
    return _max_abs(a, b) / scale


def _sub(data, n):
    return jax.tree.map(lambda x: x[:n], data)


def _pmap_pattern(projection: str) -> dict:
    """The user's pmapped step: per-device gradients, their ``pmean``, then the
    projection chained before SGD; against the same step on the global batch."""
    rng = np.random.default_rng(0)
    params = {
        "hidden": {"kernel": rng.normal(0, 0.5, (5, 6)), "bias": np.zeros(6)},
        "out": {"kernel": rng.normal(0, 0.5, (6, 1)), "bias": np.zeros(1)},
    }
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    batch = {"x": x, "y": (x[:, :1] > 0).astype(np.float32)}

    def loss(p, b):
        h = jnp.tanh(b["x"] @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        return jnp.mean((h @ p["out"]["kernel"] + p["out"]["bias"] - b["y"]) ** 2)

    # memories that conflict with the step: gradients of the negated loss of two halves
    memory = shs.forget_memory(
        loss, params, [_sub(batch, 16), jax.tree.map(lambda v: v[16:], batch)]
    )
    mask = {"hidden": {"kernel": True, "bias": True}, "out": {"kernel": True, "bias": False}}
    proj = (
        shs.gem_projection(0.5, 1e-3, eligible=mask)
        if projection == "gem"
        else shs.orthogonal_projection(1e-3, eligible=mask)
    )
    tx = optax.chain(proj, optax.sgd(0.1, momentum=0.9))

    def step(p, opt_state, b, mem, axis_name=None):
        g = jax.grad(loss)(p, b)
        if axis_name is not None:
            g = jax.lax.pmean(g, axis_name)
        updates, opt_state = tx.update(g, opt_state, p, memory=mem)
        return optax.apply_updates(p, updates), opt_state

    single, s_state = params, tx.init(params)
    one = jax.jit(step)
    for _ in range(3):
        single, s_state = one(single, s_state, batch, memory)

    n = jax.device_count()
    rep = jax.tree.map(
        lambda v: jnp.broadcast_to(v, (n, *v.shape)), (params, tx.init(params), memory)
    )
    p_rep, o_rep, m_rep = rep
    split = jax.tree.map(lambda v: v.reshape(n, -1, *v.shape[1:]), batch)
    pstep = jax.pmap(lambda p, o, b, m: step(p, o, b, m, "batch"), axis_name="batch")
    for _ in range(3):
        p_rep, o_rep = pstep(p_rep, o_rep, split, m_rep)
    first = jax.tree.map(lambda v: v[0], p_rep)
    agree = all(bool(np.all(np.asarray(v) == np.asarray(v)[:1])) for v in jax.tree.leaves(p_rep))
    return {
        "max_abs": _max_abs(single, first),
        "replicas_agree": agree,
        "projected_single": int(s_state[0].projected),
        "projected_pmap": int(o_rep[0].projected[0]),
    }


def _repair_runs(model, params, state, split) -> dict:
    devices = jax.devices()
    specs: list = []
    # a few repair steps: 4 retain batches of 32, forget batches of 32 and 12
    kwargs = dict(
        retain=_sub(split.retain, 128),
        forget=_sub(split.forget, 44),
        key=jax.random.key(2),
        eligible="all_but_first_conv",
        batch_size=32,
        epochs=1,
        progress=False,
    )

    def summary(result):
        entry = result.log[-1]
        return {
            "params": result.params,
            "state": result.model_state,
            "mask": result.mask,
            "losses": [entry["loss_retain"], entry["loss_forget"]],
            **{k: entry[k] for k in ("joint_steps", "retain_steps", "projected_steps")},
        }

    ref = summary(scissorhands_from_names(model, params, state, **kwargs))
    runs = {}
    for n in DEVICE_COUNTS:
        name = str(n)
        placed = parallel.on_mesh((params, state), parallel.data_mesh(devices[:n]))
        result = scissorhands_from_names(model, *placed, **kwargs)
        got = summary(result)
        if n == DEVICES:
            specs = sorted({str(v.sharding.spec) for v in jax.tree.leaves(result.params)})
        runs[name] = {
            "params_max_abs": _max_abs(ref["params"], got["params"]),
            "state_max_abs": _max_abs(ref["state"], got["state"]) if ref["state"] else 0.0,
            "mask_mismatch": sum(
                int(np.sum(np.asarray(a) != np.asarray(b)))
                for a, b in zip(
                    jax.tree.leaves(ref["mask"]), jax.tree.leaves(got["mask"]), strict=True
                )
            ),
            **{k: got[k] for k in ("losses", "joint_steps", "retain_steps", "projected_steps")},
        }
    runs["reference"] = {k: ref[k] for k in ("losses", "joint_steps", "retain_steps")}
    runs["reference"]["projected_steps"] = ref["projected_steps"]
    return {"scissorhands": runs, "params_after_repair": specs}


def _worker(part: str) -> dict:
    """``"pieces"``: training, saliency, memory, top-k, pmap; ``"repair"``: whole
    Scissorhands runs on 1, 2, 4 and 8 devices."""
    out: dict = {"device_count": jax.device_count()}
    mesh = parallel.data_mesh()
    split = shs.data.load_digits10("random10", seed=0)
    model = shs.linen_model(shs.DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    params, state = model.init(jax.random.key(0))

    # training: the same epochs on one device and over 8 with the large leaves split
    train = shs.data.array_source(_sub(split.train, 400), 64)  # last batch 16: even
    fit = dict(key=jax.random.key(1), epochs=3, tx=shs.sgd(0.05))
    params, state, _ = shs.fit(model.loss, params, state, train, **fit)
    if part == "repair":
        return {**out, **_repair_runs(model, params, state, split)}
    init = model.init(jax.random.key(0))
    par = shs.fit(model.loss, *init, train, mesh=mesh, shard_params=True, **fit)
    out["fit_max_abs"] = _max_abs(params, par[0])
    out["fit_sharded_specs"] = len({str(v.sharding.spec) for v in jax.tree.leaves(par[0])})

    b40, b12 = _sub(split.forget, 40), _sub(split.forget, 12)
    out["spec_even"] = str(parallel.shard_batch(b40, mesh)["image"].sharding.spec)
    out["spec_uneven"] = str(parallel.shard_batch(b12, mesh)["image"].sharding.spec)

    loss_fn = shs.bind_state(model, state)
    ref_s = shs.connection_sensitivity(loss_fn, params, [b40, b12])
    placed = parallel.on_mesh(params, mesh)
    par_s = shs.connection_sensitivity(loss_fn, placed, [b40, b12])
    out["saliency_rel"] = _max_rel(ref_s, par_s)

    eligible = shs.eligible_mask(params, "all_but_first_conv")
    ref_m = shs.forget_memory(loss_fn, params, [b40, b12], eligible=eligible)
    par_m = shs.forget_memory(loss_fn, placed, [b40, b12], eligible=eligible)
    out["memory_rel"] = _max_rel(ref_m, par_m)

    scores = jax.device_get(ref_s)
    flat = np.concatenate([np.ravel(v) for v in jax.tree.leaves(scores)])
    k = int(np.floor(0.97 * flat.size))
    tau = np.partition(flat, k - 1)[k - 1]
    expected = jax.tree.map(lambda v: v > tau, scores)

    def mismatch(tree, method="device"):
        got = shs.top_k_mask(tree, 0.97, method=method)
        return sum(
            int(np.sum(np.asarray(g) != e))
            for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True)
        )

    sharded = parallel.on_mesh(scores, mesh, shard=True, min_size=1)
    out["topk_mismatch"] = {
        "default": mismatch(scores),
        "replicated": mismatch(parallel.on_mesh(scores, mesh)),
        "sharded": mismatch(sharded),
        "sharded_host": mismatch(sharded, "host"),
    }

    # a leaf split over the devices is counted shard by shard, never gathered
    split_leaf = jax.ShapeDtypeStruct(
        (4096, 1024), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("data", None))
    )
    lowered = saliency._stats_and_kth.lower(
        [split_leaf], k=10, chunkable=saliency._chunkable([split_leaf])
    )
    temp = lowered.compile().memory_analysis().temp_size_in_bytes
    out["topk_split_leaf_temp_over_leaf"] = temp / (4 * 4096 * 1024)

    out["pmap"] = {p: _pmap_pattern(p) for p in ("gem", "orthogonal")}
    return out


if __name__ == "__main__":
    print(json.dumps(_worker(sys.argv[1])))
