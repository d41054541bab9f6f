"""The projection's cost against the number of parameters (1 M to 100 M, t = 1 and 4).

Question: does the GEM projection (``gem_projection``'s ``update``, jitted, on the
device) grow linearly with the parameter count, and what does it cost per million
parameters? The update reads the t memories and the gradient once for the Gram matrix
``M M^T`` and ``M g`` and once more for ``g + M^T v`` (plus a t x t QP), so the work is
about ``(2t + 2) P`` floats moved: linear in P.

Two layouts of the parameters, every leaf projected:

- ``model``: leaves of at most 2,359,296 entries (ResNet-18's largest, a 3x3x512x512
  convolution), as many as P needs: a bigger model has more leaves;
- ``large``: four leaves of 1/2, 1/4, 1/8, 1/8 of P (up to 200 MB each at 100 M).

On a CPU the second layout also measures the allocator: the update writes new leaves,
and glibc serves blocks above its 32 MB mmap threshold with fresh pages that the kernel
faults in on every call (reported as minor page faults and system time per call); an
accelerator's pooled allocator has no such cost.

For each layout, size and t, the update is timed after a compile call, as the median of
``--repeats`` calls, alternating with a reference on the same leaves: the rest of the
repair's optimiser step (weight decay + momentum SGD), a plain memory-bound pass whose
time per million parameters shows what the machine's memory system does at that size;
``projection_over_reference`` is reported per row. Linear growth is checked by a least-squares fit
``time = a + b P`` (reported with R^2) and by the time per million parameters: from
10 M up it must stay within +-25 % of its value at 10 M (below that, the fixed cost of
a call is visible).

Run:  python benchmarks/projection_scaling.py [--sizes 1,3,10,30,100] [--repeats 5]
Writes benchmarks/results/projection_scaling.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from _common import machine

import scissorhands_jax as shs

MODEL_LEAF = 3 * 3 * 512 * 512


def shapes(total: int, layout: str) -> list[tuple[int, ...]]:
    """The leaf shapes of ``total`` entries in ``layout`` (see the module docstring)."""
    if layout == "model":
        n = -(-total // MODEL_LEAF)
        return [(total // n + (i < total % n),) for i in range(n)]
    rows = total // 1000
    parts = [rows // 2, rows // 4, rows // 8]
    return [(r, 1000) for r in [*parts, rows - sum(parts)]]


def time_update(update, tx, grads, t: int, key, repeats: int) -> dict:
    """Median time of one projected update with t memories, its page faults, and the
    median time of the reference (the rest of the repair's optimiser step on the same
    leaves), the two timed alternately."""
    # memories opposed to the gradient, so GEM projects (its cost does not depend on
    # it: the combination is always computed)
    memory = [
        -g[None] + 0.1 * jax.random.normal(jax.random.fold_in(key, 1000 + i), (t, *g.shape))
        for i, g in enumerate(grads)
    ]
    state = tx.init(grads)
    ref_state = REFERENCE.init(grads)
    jax.block_until_ready(update(grads, state, memory))
    jax.block_until_ready(reference(grads, ref_state, grads))
    times, ref_times, faults, system = [], [], 0, 0.0
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        jax.block_until_ready(update(grads, state, memory))
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults += after.ru_minflt - before.ru_minflt
        system += after.ru_stime - before.ru_stime
        start = time.perf_counter()
        jax.block_until_ready(reference(grads, ref_state, grads))
        ref_times.append(time.perf_counter() - start)
    total = sum(g.size for g in grads)
    med, ref = float(np.median(times)), float(np.median(ref_times))
    return {
        "parameters": total,
        "t": t,
        "seconds": times,
        "median_s": med,
        "ms_per_million": med * 1e3 / (total / 1e6),
        "minor_faults_per_call": faults / repeats,
        "system_s_per_call": system / repeats,
        "reference_median_s": ref,
        "projection_over_reference": med / ref,
    }


REFERENCE = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(5e-3, momentum=0.9))
"""The rest of the repair's optimiser step (weight decay and momentum SGD): a plain
memory-bound pass over the same leaves, timed beside the projection."""


@jax.jit
def reference(grads, state, params):
    return REFERENCE.update(grads, state, params)


def fit(sel: list[dict]) -> dict:
    """Least squares ``ms = a + b * millions`` and the per-million cost against 10 M."""
    p = np.array([r["parameters"] / 1e6 for r in sel])
    y = np.array([r["median_s"] * 1e3 for r in sel])
    slope, intercept = np.polyfit(p, y, 1)
    r2 = 1 - np.sum((y - (slope * p + intercept)) ** 2) / np.sum((y - y.mean()) ** 2)
    ref = [r["ms_per_million"] for r in sel if r["parameters"] == 10_000_000]
    big = [r["ms_per_million"] for r in sel if r["parameters"] >= 10_000_000]
    spread = [v / ref[0] for v in big] if ref else []
    return {
        "ms_per_million_fit": float(slope),
        "intercept_ms": float(intercept),
        "r2": float(r2),
        "per_million_relative_to_10M": spread,
        "linear_from_10M_within_25pct": bool(spread) and all(0.75 <= v <= 1.25 for v in spread),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,10,30,100", help="millions of parameters")
    parser.add_argument("--ts", default="1,4", help="numbers of memories t")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--projection", choices=("gem", "orthogonal"), default="gem")
    parser.add_argument("--layouts", default="model,large")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    sizes = [int(float(s) * 1_000_000) for s in args.sizes.split(",")]
    ts = [int(t) for t in args.ts.split(",")]
    tx = (
        shs.gem_projection(0.5, 1e-3)
        if args.projection == "gem"
        else shs.orthogonal_projection(1e-3)
    )
    update = jax.jit(lambda g, state, memory: tx.update(g, state, memory=memory)[0])

    rows = []
    for layout in args.layouts.split(","):
        for total in sizes:
            key = jax.random.key(total)
            grads = [
                jax.random.normal(jax.random.fold_in(key, i), s)
                for i, s in enumerate(shapes(total, layout))
            ]
            for t in ts:
                rows.append(time_update(update, tx, grads, t, key, args.repeats))
                rows[-1].update(layout=layout, leaves=len(grads))
                r = rows[-1]
                print(
                    f"{layout:5s} P = {total / 1e6:5.0f} M ({len(grads):3d} leaves)  t = {t}: "
                    f"{r['median_s'] * 1e3:9.2f} ms  ({r['ms_per_million']:.3f} ms per million"
                    f" parameters; {r['minor_faults_per_call']:.0f} page faults, "
                    f"{r['system_s_per_call'] * 1e3:.0f} ms system time per call; "
                    f"{r['projection_over_reference']:.2f}x the rest of the optimiser step)",
                    flush=True,
                )
                gc.collect()
            del grads
            gc.collect()

    fits = {}
    for layout in args.layouts.split(","):
        for t in ts:
            sel = [r for r in rows if r["t"] == t and r["layout"] == layout]
            fits[f"{layout}, t={t}"] = fit(sel)
            f = fits[f"{layout}, t={t}"]
            print(
                f"{layout:5s} t = {t}: fit {f['ms_per_million_fit']:.3f} ms per million + "
                f"{f['intercept_ms']:.2f} ms, R^2 = {f['r2']:.4f}; per-million cost relative "
                f"to 10 M: {', '.join(f'{v:.2f}' for v in f['per_million_relative_to_10M'])}"
                f" -> {'linear' if f['linear_from_10M_within_25pct'] else 'NOT linear'}"
            )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "projection_scaling",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "settings": {
            "projection": args.projection,
            "repeats": args.repeats,
            "layouts": args.layouts,
            "model_leaf_max_entries": MODEL_LEAF,
        },
        "rows": rows,
        "fit": fits,
    }
    (out / "projection_scaling.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
