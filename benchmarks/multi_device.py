"""Data-parallel Scissorhands on 1, 2, 4, 8 devices: same results, and the step time.

Question: does splitting every batch over N devices (parameters placed with ``on_mesh``, the batch
on the ``data`` axis, parameters replicated) give the one-device result, and how does
the step time scale? Two workloads, each on a mesh of N devices:

- ``digits``: the whole of ``scissorhands()`` on digits-10 (random10, seed 0, the demo's
  settings, ``--epochs`` repair epochs), timed warm (a second run, programs compiled);
- ``resnet18``: repair steps of ResNet-18 on CIFAR shapes (retain + forget
  forward/backward, GEM projection against a t = 1 memory on layer3/layer4/fc,
  weight decay, momentum SGD), global batch ``--batch``: the median step time after a
  compiled warm-up step, and the parameters after ``--steps`` steps.

Each N's parameters are compared with N = 1 (max |difference|; the re-initialisation
masks entry by entry).

``--virtual`` (the default on a CPU): N virtual CPU devices made with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (and single-threaded ops, see
``SINGLE_THREADED_OPS``), one process per N. These
devices share the same CPU cores, so their timings are NOT a scaling figure; they only
show the partitioned programs run and what the partitioning costs. ``--real``: the
accelerators of this machine, meshes over the first 1, 2, 4, ... of them, in one
process; that is the scaling figure (name the hardware with it).

Run:  python benchmarks/multi_device.py [--virtual | --real] [--counts 1,2,4,8]
Writes benchmarks/results/multi_device_virtual.json (or multi_device_real.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, resnet18_repair_setup

SINGLE_THREADED_OPS = "--xla_cpu_multi_thread_eigen=false"
"""Virtual devices run each op on its device's own thread. With Eigen's intra-op thread
pool, 8 devices on 2 cores can starve one device's convolution while the other seven
hold the pool waiting in an all-reduce, until XLA's 40 s rendezvous timeout aborts the
process (seen here with ResNet-18's BatchNorm all-reduces). Same flag for every N."""


def _digits(mesh, epochs: int) -> tuple[dict, dict]:
    import jax
    import jax.numpy as jnp

    import scissorhands_jax as shs
    from scissorhands_jax._method import check_settings
    from scissorhands_jax.experiment.config import load_config, methods_of

    config = load_config("digits10_random10")  # the demo's settings
    train = config["train"]
    unlearn = {k: v for k, v in methods_of(config)["scissorhands"].items() if k != "eligible"}

    split = shs.data.load_digits10("random10", 0)
    model = shs.linen_model(shs.DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    params, state = model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(split.train, train["batch_size"]),
        key=jax.random.key(1),
        epochs=5,
        tx=shs.sgd(train["lr"]),
    )
    settings = {**unlearn, "epochs": epochs}
    if mesh is not None:  # placed once: the method runs where its parameters live
        params, state = shs.parallel.on_mesh((params, state), mesh)

    def run():
        result = shs.scissorhands(
            model,
            params,
            state,
            retain=split.retain,
            forget=split.forget,
            key=jax.random.key(2),
            eligible="all_but_first_conv",
            **check_settings(progress=False, **settings),
        )
        return jax.block_until_ready(result)

    start = time.perf_counter()
    run()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    result = run()
    warm = time.perf_counter() - start
    summary = {
        "cold_s": cold,
        "warm_s": warm,
        "projected_steps": sum(e.get("projected_steps", 0) for e in result.log),
        "loss_retain_last": result.log[-1]["loss_retain"],
    }
    return summary, {"params": result.params, "mask": result.mask}


def _resnet18(mesh, batch: int, steps: int) -> tuple[dict, dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import scissorhands_jax as shs
    from scissorhands_jax.parallel import on_mesh, shard_batch

    model, params, state, eligible, tx = resnet18_repair_setup()

    def data(i):
        r = np.random.default_rng(i)
        return {
            "image": r.normal(size=(batch, 32, 32, 3)).astype(np.float32),
            "label": r.integers(0, 10, batch).astype(np.int32),
        }

    params, state = on_mesh(params, mesh), on_mesh(state, mesh)
    memory = shs.forget_memory(
        shs.bind_state(model, state), params, [data(10_000)], eligible=eligible
    )
    opt = on_mesh(tx.init(params), mesh)
    lam = jnp.float32(0.05)
    times = []
    run_repair = shs.repair_step(model.loss, tx)  # compiled once, at step 0
    for i in range(steps + 1):  # step 0 compiles
        b_r, b_f = shard_batch(data(2 * i), mesh), shard_batch(data(2 * i + 1), mesh)
        start = time.perf_counter()
        st, _ = run_repair(shs.TrainState(0, params, state, opt), (b_r, b_f), lam, memory)
        params, state, opt = st.params, st.model_state, st.opt_state
        jax.block_until_ready((params, opt, state))
        times.append(time.perf_counter() - start)
    summary = {
        "compile_step_s": times[0],
        "step_s": times[1:],
        "median_step_s": float(np.median(times[1:])),
        "projected_steps": int(opt[0].projected),
    }
    return summary, {"params": params, "batch_stats": state}


def measure(devices, args) -> tuple[dict, dict]:
    """Runs the workloads on a mesh over ``devices``; returns the summary and the
    arrays to compare (as NumPy)."""
    import jax

    from scissorhands_jax.parallel import data_mesh

    mesh = data_mesh(devices)
    summary, arrays = {"devices": len(devices)}, {}
    for name in args.models.split(","):
        if name == "digits":
            s, a = _digits(mesh, args.epochs)
        else:
            s, a = _resnet18(mesh, args.batch, args.steps)
        summary[name] = s
        arrays[name] = jax.device_get(a)
        print(f"  {len(devices)} devices {name}: {json.dumps(s)}", file=sys.stderr, flush=True)
    return summary, arrays


def _flat(tree) -> dict:
    import jax

    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def compare(ref: dict, got: dict) -> dict:
    """Max |difference| of the float leaves (where it is, and relative to that leaf's
    largest |value| and to the largest |value| of the whole tree), and the count of
    differing entries of the boolean leaves (the masks)."""
    import numpy as np

    out = {}
    for model, arrays in got.items():
        a, b = _flat(ref[model]), _flat(arrays)
        floats = [k for k in a if np.size(a[k]) and a[k].dtype != bool]
        diff = {k: float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in floats}
        worst = max(floats, key=diff.get)
        leaf_scale = float(np.max(np.abs(a[worst])))
        tree_scale = max(float(np.max(np.abs(a[k]))) for k in floats)
        out[model] = {
            "max_abs_diff": diff[worst],
            "at": worst,
            "max_abs_value_there": leaf_scale,
            "max_abs_diff_over_tree_max": diff[worst] / tree_scale,
            "mask_mismatch": int(sum(np.sum(a[k] != b[k]) for k in a if a[k].dtype == bool)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--virtual", action="store_true", help="virtual CPU devices (default)")
    where.add_argument("--real", action="store_true", help="this machine's accelerators")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument("--epochs", type=int, default=2, help="digits repair epochs")
    parser.add_argument("--batch", type=int, default=None, help="ResNet-18 global batch")
    parser.add_argument("--steps", type=int, default=3, help="timed ResNet-18 steps")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    args.batch = args.batch or (256 if args.real else 32)

    if args.worker:  # one virtual-device count, in its own process
        import jax
        import numpy as np

        summary, arrays = measure(jax.devices(), args)
        with open(args.worker, "wb") as f:
            np.save(f, np.array([arrays], dtype=object), allow_pickle=True)
        print(json.dumps(summary))
        return

    runs, arrays = [], {}
    if args.real:
        import jax

        for n in counts:
            if n > jax.device_count():
                print(f"skipping {n}: only {jax.device_count()} devices", file=sys.stderr)
                continue
            summary, arrays[n] = measure(jax.devices()[:n], args)
            runs.append(summary)
    else:
        import numpy as np

        for n in counts:
            env = dict(os.environ)
            env["XLA_FLAGS"] = (
                env.get("XLA_FLAGS", "")
                + f" --xla_force_host_platform_device_count={n} {SINGLE_THREADED_OPS}"
            )
            env["JAX_PLATFORMS"] = "cpu"
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "arrays.npy")
                argv = [a for a in sys.argv[1:] if a != "--virtual"]
                proc = subprocess.run(
                    [sys.executable, __file__, *argv, "--worker", path],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                if proc.returncode:
                    raise RuntimeError(f"the {n}-device run failed")
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                arrays[n] = np.load(path, allow_pickle=True)[0]

    base = min(arrays)
    for run in runs:
        run["vs_1_device"] = compare(arrays[base], arrays[run["devices"]])
    label = "real" if args.real else "virtual"
    caveat = "scaling" if args.real else "NOT a scaling figure: they share the CPU cores"
    print(f"\n{label} devices ({caveat})")
    for run in runs:
        line = f"N = {run['devices']}: "
        if "digits" in run:
            line += f"digits warm {run['digits']['warm_s']:.2f} s; "
        if "resnet18" in run:
            line += f"ResNet-18 step {run['resnet18']['median_step_s'] * 1e3:.0f} ms; "
        line += "vs N=1 " + json.dumps(run["vs_1_device"])
        print(line)
    ref = runs[0]
    scaling = {}
    for run in runs:
        if "resnet18" in run:
            speedup = ref["resnet18"]["median_step_s"] / run["resnet18"]["median_step_s"]
            scaling[run["devices"]] = {
                "resnet18_speedup": speedup,
                "resnet18_efficiency": speedup / (run["devices"] / ref["devices"]),
            }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": f"multi_device_{label}",
        "command": "python " + " ".join(sys.argv),
        "note": (
            "virtual CPU devices share the same cores: timings show the partitioned "
            "programs run, they are not a scaling figure"
            if not args.real
            else "real accelerators"
        ),
        "machine": machine(),
        "settings": {
            "counts": counts,
            "models": args.models,
            "digits_epochs": args.epochs,
            "resnet18_global_batch": args.batch,
            "resnet18_steps": args.steps,
        },
        "runs": runs,
        "scaling": scaling,
    }
    (out / f"multi_device_{label}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
