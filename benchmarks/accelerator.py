"""ResNet-18 on one accelerator: images/s and the fraction of the device's peak FLOP/s.

Question: on a GPU or TPU, how fast are the programs a Scissorhands run spends its time
in, and how close do they come to the device's peak? On synthetic CIFAR-shaped data
(32x32x3, 10 classes, no download), for float32 and bfloat16 (bfloat16 compute with
float32 parameters and optimiser state: :func:`scissorhands_jax.with_precision`) and for
batches of 256 and 1024, it times side by side:

- ``train_step``: :func:`scissorhands_jax._training.train_update` (forward, backward, weight
  decay, momentum SGD, BatchNorm statistics; parameters and optimiser state donated);
- ``saliency``: :func:`scissorhands_jax.connection_sensitivity` on one forget batch;
- ``repair_gem``: a joint repair step as :func:`scissorhands_jax.repair` runs it
  (gradients of a retain and a forget batch, the GEM projection against a t = 1 forget
  memory on ``layer3, layer4, fc``, weight decay, momentum SGD);
- ``repair_plain``: the same step without the projection (goal: ``repair_gem`` at most
  1.05 times ``repair_plain``).

MFU = FLOPs of one training step (XLA's ``cost_analysis()`` of the lowered program, which
counts the convolutions; the compiled GPU program hides them in cuDNN calls) x steps/s over the
peak of :data:`PEAK_FLOPS` for the device kind (dense, no sparsity), bfloat16 against the
bfloat16 peak, float32 against both the plain float32 and the TF32 tensor-core peak (XLA
may run float32 convolutions in TF32 on NVIDIA GPUs). Goal: bfloat16 training MFU at
least 35 %. Every configuration is compiled first (untimed); the whole run stops starting
new configurations after ``--budget`` seconds (the rest are recorded as skipped).

Run:  python benchmarks/accelerator.py            (about 5 minutes on one GPU)
      python benchmarks/accelerator.py --quick    (CPU smoke test: batch 2, 2 steps,
                                                   width 8: proves the script runs)
Writes benchmarks/results/accelerator_<device kind>.json (``..._quick.json`` with --quick).
Beside it, benchmarks/accelerator_torch.py times the same step in PyTorch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine, resnet18_repair_setup

import scissorhands_jax as shs
from scissorhands_jax import _training as training
from scissorhands_jax._loop import private_copy

PEAK_FLOPS = (
    # (device kind contains, {precision: dense peak FLOP/s}), first match wins
    ("H200", {"bfloat16": 989e12, "float32": 67e12, "tf32": 494e12}),
    ("H100", {"bfloat16": 989e12, "float32": 67e12, "tf32": 494e12}),  # SXM
    ("A100", {"bfloat16": 312e12, "float32": 19.5e12, "tf32": 156e12}),
    ("TPU v6 lite", {"bfloat16": 918e12, "float32": 918e12}),
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
)
"""Vendor datasheet peaks (dense); TPUs run float32 matmuls through bfloat16 passes."""


def peak_flops(kind: str) -> dict[str, float]:
    for name, peaks in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return peaks
    return {}


def _cost(compiled, field: str) -> float | None:
    """One field of XLA's cost analysis of a compiled program (None when absent)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost[field]) if cost and field in cost else None


def _time(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def _program_flops(jitted, args) -> float | None:
    """FLOPs of one call as written, counted by XLA on the program lowered for the CPU.

    The count is a property of the program, not of the device; the compiled GPU program's
    own analysis leaves out what it hands to cuDNN as custom calls (the convolutions), and
    the lowered program's analysis returns nothing on GPUs (jax 0.11)."""
    return _cost(jitted.trace(*args).lower(lowering_platforms=("cpu",)), "flops")


def train_step_program(setup, precision: str, batch_size: int):
    """The jitted training step of a configuration and its arguments (synthetic data)."""
    model, params, state = setup[:3]
    loss = shs.with_precision(model.loss, precision)
    tx = shs.sgd(0.1, momentum=0.9, weight_decay=5e-4)
    jstep = jax.jit(
        lambda p, s, o, b: training.train_update(loss, tx, p, s, o, b), donate_argnums=(0, 1, 2)
    )
    batch = {
        "image": jnp.zeros((batch_size, 32, 32, 3), jnp.float32),
        "label": jnp.zeros((batch_size,), jnp.int32),
    }
    return jstep, (params, state, tx.init(params), batch)


def with_mfu(name: str, res: dict, peaks: dict[str, float]) -> dict:
    """``res`` with its FLOP rate and MFU filled in from ``train_step_flops``."""
    precision, batch = name.split("_batch")
    flops = res["train_step_flops"]
    rate = None if flops is None else flops / res["median_seconds_per_call"]["train_step"]
    res["train_step_flops_per_image"] = None if flops is None else flops / int(batch)
    res["train_step_flops_per_s"] = rate
    res["mfu"] = {
        f"vs_{k}_peak": rate / v
        for k, v in peaks.items()
        if rate is not None and (k == precision or (precision == "float32" and k == "tf32"))
    }
    return res


def goals_of(results: dict) -> dict[str, bool]:
    bf16 = [r["mfu"].get("vs_bfloat16_peak") for k, r in results.items() if "bfloat16" in k]
    bf16 = [m for m in bf16 if m is not None]
    return {
        "repair_gem / repair_plain <= 1.05": all(
            r["repair_gem_over_repair_plain"] <= 1.05 for r in results.values()
        ),
        "bfloat16 training MFU >= 35 %": bool(bf16) and max(bf16) >= 0.35,
    }


def recount(path: Path, width: int) -> None:
    """Fills in the FLOPs and MFU of a results file written without them (by a version
    of this script that read the FLOPs from the compiled GPU program) on this machine."""
    payload = json.loads(path.read_text())
    setup = resnet18_repair_setup(width)
    peaks = payload["settings"]["peak_flops_used"]
    for name, res in payload["results"].items():
        precision, batch = name.split("_batch")
        res["train_step_flops"] = _program_flops(*train_step_program(setup, precision, int(batch)))
        with_mfu(name, res, peaks)
        mfu = "  ".join(f"MFU {k[3:-5]} {v:.1%}" for k, v in res["mfu"].items())
        print(f"{name}: {res['train_step_flops_per_image'] / 1e9:.2f} GFLOP/image  {mfu}")
    payload["goals"] = goals_of(payload["results"])
    payload["flops_recounted"] = {"command": "python " + " ".join(sys.argv), "jax": jax.__version__}
    path.write_text(json.dumps(payload, indent=2))
    print(f"goals: {payload['goals']}; wrote {path}")


def run_config(setup, precision: str, batch_size: int, steps: int, rounds: int) -> dict:
    model, params, state, eligible, gem_tx, plain_tx = setup
    loss = shs.with_precision(model.loss, precision)
    rng = np.random.default_rng(batch_size)

    def batch():
        return {
            "image": jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
        }

    retain, forget = batch(), batch()
    jstep, (_, _, opt_state, _) = train_step_program(setup, precision, batch_size)
    t0 = time.perf_counter()
    compiled = jstep.lower(params, state, opt_state, retain).compile()
    compile_s = time.perf_counter() - t0
    flops = _program_flops(jstep, (params, state, opt_state, retain))
    bytes_accessed = _cost(compiled, "bytes accessed")
    memory = shs.forget_memory(shs.bind_state(model, state), params, [forget], eligible=eligible)
    saliency_loss = jax.tree_util.Partial(lambda s, p, b: loss(p, s, b, False)[0], state)
    lam = jnp.float32(0.05)
    # the steps donate their carries, so each variant starts from its own copy
    carry = {
        "train": private_copy((params, state, opt_state)),
        "gem": private_copy((params, state, gem_tx.init(params))),
        "plain": private_copy((params, state, plain_tx.init(params))),
    }

    def train_step():
        p, s, o, value = compiled(*carry["train"], retain)
        carry["train"] = (p, s, o)
        return value

    def repair(name, tx_, project):
        run_repair = shs.repair_step(loss, tx_)  # compiled once per variant

        def step():
            st = shs.TrainState(0, *carry[name])
            st, _ = run_repair(st, (retain, forget), lam, memory, project)
            carry[name] = (st.params, st.model_state, st.opt_state)
            return st.params

        return step

    variants = {
        "train_step": train_step,
        "saliency": lambda: shs.connection_sensitivity(saliency_loss, params, [forget]),
        "repair_gem": repair("gem", gem_tx, True),
        "repair_plain": repair("plain", plain_tx, False),
    }
    images = {"train_step": 1, "saliency": 1, "repair_gem": 2, "repair_plain": 2}
    for fn in variants.values():  # compile and warm up, untimed
        _time(fn, 2)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, fn in order:
            times[name].append(_time(fn, steps))
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {
        "train_step_compile_s": compile_s,
        "seconds_per_call": times,
        "median_seconds_per_call": med,
        "images_per_second": {k: images[k] * batch_size / v for k, v in med.items()},
        "repair_gem_over_repair_plain": med["repair_gem"] / med["repair_plain"],
        "repair_gem_over_two_train_steps": med["repair_gem"] / (2 * med["train_step"]),
        "train_step_flops": flops,
        # memory traffic of the compiled program as XLA estimates it (on GPUs without
        # the cuDNN calls): a lower bound, and its FLOP/byte an upper bound
        "train_step_bytes_accessed": bytes_accessed,
        "train_step_flops_per_byte": (
            None if not (flops and bytes_accessed) else flops / bytes_accessed
        ),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="CPU smoke test: batch 2, 2 steps, width 8"
    )
    parser.add_argument("--width", type=int, default=64, help="first stage's channels")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--precisions", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--steps", type=int, default=10, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; then skip the rest")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--suffix", default="", help="appended to the file name: _SUFFIX")
    parser.add_argument("--recount", type=Path, help="fill in a results file's FLOPs and MFU")
    args = parser.parse_args()
    if args.recount:
        return recount(args.recount, args.width)
    if args.quick:
        args.batches, args.steps, args.rounds, args.width = [2], 2, 1, 8

    start = time.perf_counter()
    model, params, state, eligible, gem_tx = resnet18_repair_setup(args.width)
    plain_tx = shs.repair_tx(eligible, projection=shs.ProjectionSettings(projection="none"))
    setup = (model, params, state, eligible, gem_tx, plain_tx)
    kind = jax.devices()[0].device_kind
    peaks = peak_flops(kind)
    results, skipped = {}, []
    for batch_size in args.batches:
        for precision in args.precisions:
            name = f"{precision}_batch{batch_size}"
            if time.perf_counter() - start > args.budget:
                skipped.append(name)
                print(f"{name}: skipped (past the {args.budget:.0f} s budget)", flush=True)
                continue
            res = run_config(setup, precision, batch_size, args.steps, args.rounds)
            results[name] = with_mfu(name, res, peaks)
            ips = res["images_per_second"]
            mfu = "  ".join(f"MFU {k[3:-5]} {v:.1%}" for k, v in res["mfu"].items())
            print(
                f"{name}: train {ips['train_step']:.0f} img/s, saliency {ips['saliency']:.0f}, "
                f"repair {ips['repair_gem']:.0f} (gem/plain "
                f"{res['repair_gem_over_repair_plain']:.3f})  {mfu}  "
                f"[{time.perf_counter() - start:.0f} s]",
                flush=True,
            )
    goals = goals_of(results)
    print("goals: " + "; ".join(f"{k}: {'met' if v else 'not met'}" for k, v in goals.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", kind).strip("_").lower() + ("_quick" if args.quick else "")
    slug += f"_{args.suffix}" if args.suffix else ""
    payload = {
        "benchmark": "accelerator",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "settings": {
            "model": f"resnet18 (CIFAR stem, width {args.width})",
            "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
            "input": [32, 32, 3],
            "batches": args.batches,
            "precisions": args.precisions,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "peak_flops_used": peaks,
            "mixed_precision": "bfloat16 compute, float32 parameters and optimiser state",
        },
        "results": results,
        "skipped": skipped,
        "total_seconds": time.perf_counter() - start,
        "goals": goals,
    }
    path = out / f"accelerator_{slug}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
