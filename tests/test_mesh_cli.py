"""``--mesh`` on the commands: 4 virtual CPU devices give the one-device result.

The commands run in a subprocess that sets ``XLA_FLAGS`` to 4 host devices before JAX
starts (this file run as a script), so the rest of the suite keeps its single device.
The worker trains the digits-10 smoke config once on one device, then runs ``unlearn``
and ``evaluate`` on copies of that run with ``--mesh 1`` and ``--mesh 4``, trains the
original again on 4 devices, runs FT and Retrain from that original placed on the mesh
(as ``compare --mesh`` does) and on one device, and reports the largest
differences it finds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CONFIG = str(Path(__file__).resolve().parents[1] / "scissorhands_jax/configs/digits10_random10.py")
DEVICES = 4


def _max_rel(a, b) -> float:
    import jax

    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12)))
    return worst


def _was_split(tree) -> bool:
    """Whether the arrays live on all the mesh's devices (the run was data-parallel)."""
    import jax

    return all(len(x.sharding.device_set) == DEVICES for x in jax.tree.leaves(tree))


def _worker(tmp: Path) -> dict:
    import jax

    from scissorhands_jax import cli
    from scissorhands_jax.experiment import pipeline as pipe
    from scissorhands_jax.experiment.config import load_config
    from scissorhands_jax.parallel import resolve_mesh

    assert jax.device_count() == DEVICES
    common = [CONFIG, "--smoke", "--no-progress"]
    out = {}
    assert cli.main(["train", *common, "--out", str(tmp / "one"), "--mesh", "1"]) == 0
    shutil.copytree(tmp / "one", tmp / "four")
    for name, mesh in (("one", "1"), ("four", str(DEVICES))):
        run = str(tmp / name)
        assert cli.main(["unlearn", *common, "--run", run, "--mesh", mesh]) == 0
        assert cli.main(["evaluate", *common, "--run", run, "--mesh", mesh]) == 0
    assert cli.main(["train", *common, "--out", str(tmp / "train4"), "--only", "original"]) == 0

    cfg = load_config(CONFIG, smoke=True)
    split = pipe.build_split(cfg, progress=False)
    model = pipe.build_model(cfg, split.dataset)
    p1, s1, m1 = pipe.load_unlearned(tmp / "one", cfg, split, model)
    p4, s4, m4 = pipe.load_unlearned(tmp / "four", cfg, split, model)
    out["unlearn_params_rel"] = _max_rel(p4, p1)
    out["unlearn_mask_differs"] = int(
        sum(int(np.sum(np.asarray(a) != np.asarray(b))) for a, b in
            zip(jax.tree.leaves(m4), jax.tree.leaves(m1), strict=True))
    )  # fmt: skip
    o1, _ = pipe.load_trained(tmp / "one", "original", cfg, split, model)
    o4, _ = pipe.load_trained(tmp / "train4", "original", cfg, split, model)
    out["train_params_rel"] = _max_rel(o4, o1)
    out["auto_mesh_devices"] = int(resolve_mesh("auto").devices.size)
    # a baseline (FT) and Retrain from parameters placed on the mesh, against one device
    from scissorhands_jax.baselines import METHODS
    from scissorhands_jax.parallel import on_mesh

    s1 = pipe.load_trained(tmp / "one", "original", cfg, split, model)[1]
    retain, forget = pipe.split_arrays(split, "retain"), pipe.split_arrays(split, "forget")
    for name, hps in (("ft", {"epochs": 2}), ("retrain", {"epochs": 2})):
        runs = []
        for mesh in (None, resolve_mesh(str(DEVICES))):
            placed = (o1, s1) if mesh is None else on_mesh((o1, s1), mesh)
            runs.append(METHODS[name](model, *placed, retain=retain, forget=forget,
                                      key=jax.random.key(5), **hps))  # fmt: skip
        out[f"{name}_params_rel"] = _max_rel(runs[1].params, runs[0].params)
        out[f"{name}_sharded"] = _was_split(runs[1].params)
    rows = {}
    for name in ("one", "four"):
        rows[name] = {
            r["model"]: r for r in json.loads((tmp / name / "evaluation.json").read_text())["rows"]
        }
    out["evaluation_max_abs"] = max(
        abs(rows["four"][m][k] - rows["one"][m][k]) for m in rows["one"] for k in ("UA", "RA", "TA")
    )
    return out


@pytest.fixture(scope="module")
def mesh_runs(tmp_path_factory):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={DEVICES}"
        + " --xla_cpu_multi_thread_eigen=false"
    )
    env["JAX_PLATFORMS"] = "cpu"
    tmp = tmp_path_factory.mktemp("mesh")
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_unlearn_on_four_devices_matches_one_device(mesh_runs):
    # the same global batches on 4 devices: the same masks, and parameters equal up to
    # the order of the floating-point sums of the gradient all-reduce
    assert mesh_runs["unlearn_mask_differs"] == 0
    assert mesh_runs["unlearn_params_rel"] < 1e-4


@pytest.mark.slow
def test_train_on_every_device_by_default_matches_one_device(mesh_runs):
    assert mesh_runs["auto_mesh_devices"] == DEVICES  # the default is every device
    assert mesh_runs["train_params_rel"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ft", "retrain"])
def test_a_baseline_on_four_devices_matches_one_device(mesh_runs, name):
    assert mesh_runs[f"{name}_sharded"]  # it ran on the 4 devices
    assert mesh_runs[f"{name}_params_rel"] < 1e-4


@pytest.mark.slow
def test_evaluate_on_four_devices_gives_the_same_scores(mesh_runs):
    assert mesh_runs["evaluation_max_abs"] < 1e-6


def test_mesh_values_are_checked():
    from scissorhands_jax.parallel import resolve_mesh

    assert resolve_mesh("1") is None and resolve_mesh(None) is None
    assert resolve_mesh("auto") is None  # one CPU device in the suite's own process
    for bad in ("0", "two", "1.5", "-1", "99"):
        with pytest.raises(ValueError, match="--mesh must be 'auto' or a device count"):
            resolve_mesh(bad)


if __name__ == "__main__":
    print(json.dumps(_worker(Path(sys.argv[1]))))
