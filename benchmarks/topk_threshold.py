"""The global top-k threshold at model scale: counting bisection against sorting.

Question: what do the time and the peak memory of the threshold cost at 10 M and 100 M
scores, for the large-model method against a sort? Three methods compute the same
``tau`` (the ``floor(0.97 N)``-th smallest score with the release's fallback):

- ``bisection``: ``top_k_threshold(method="device")``: a 32-step bisection over the
  order-preserving uint32 image of float32 that counts per leaf and per chunk of
  ``COUNT_CHUNK`` entries; no concatenation, no sort, no copy of the scores;
- ``sort``: the obvious device program: concatenate every leaf, ``jnp.sort``, index;
- ``host``: ``top_k_threshold(method="host")``: a host copy and ``np.partition``
  (what ``method="auto"`` uses up to ``HOST_MAX_ENTRIES``).

Each (method, size) runs in its own process so the memory figures do not mix. The
scores (|N(0,1)| rounded to 3 decimals: many ties) are built on the device leaf by leaf
(seven leaves, 40 % down to 2 % of N). Peak memory is the resident set's high-water
mark above the resident set just before the call, reset with ``/proc/self/clear_refs``
(Linux) before each measured call: ``first_call_extra_mb`` includes compilation,
``steady_extra_mb`` is the largest extra of the timed calls. ``ru_maxrss`` (the
process's lifetime peak, ``resource.getrusage``) and, for the device programs, XLA's own
temporary-buffer size are reported too.

Run:  python benchmarks/topk_threshold.py [--sizes 10,100] [--repeats 3]
Writes benchmarks/results/topk_threshold.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

METHODS = ("bisection", "sort", "host")
FRACTIONS = (0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.02)
SPARSITY = 0.97


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Resets the high-water mark to the current resident set; returns it in kB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS")


def _peak_extra_mb(base_kb: int) -> float:
    return (_status_kb("VmHWM") - base_kb) / 1024


def worker(method: str, total: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scissorhands_jax._saliency import _chunkable, _stats_and_kth, top_k_threshold

    @functools.partial(jax.jit, static_argnums=1)
    def leaf(key, n):
        return jnp.round(jnp.abs(jax.random.normal(key, (n // 1000, 1000))), 3)

    sizes = [int(f * total) // 1000 * 1000 for f in FRACTIONS]
    sizes[0] += total - sum(sizes)
    key = jax.random.key(0)
    scores = [
        jax.block_until_ready(leaf(jax.random.fold_in(key, i), n)) for i, n in enumerate(sizes)
    ]
    k = math.floor(SPARSITY * total)

    @functools.partial(jax.jit, static_argnames="k")
    def sort_stats(tree, k):
        flat = jnp.sort(jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)]))
        return flat[0], flat[-1], flat[k - 1]

    def by_sort(tree):
        lo, hi, tau = sort_stats(tree, k)
        return jnp.float32((hi - lo) / 2.0 if tau in (hi, lo) else tau)

    run = {
        "bisection": lambda s: top_k_threshold(s, SPARSITY, method="device"),
        "sort": by_sort,
        "host": lambda s: top_k_threshold(s, SPARSITY, method="host"),
    }[method]
    xla_temp = None
    if method != "host":
        if method == "bisection":
            lowered = _stats_and_kth.lower(scores, k=k, chunkable=_chunkable(scores))
        else:
            lowered = sort_stats.lower(scores, k=k)
        xla_temp = lowered.compile().memory_analysis().temp_size_in_bytes

    rss_before = _reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    tau = float(jax.block_until_ready(run(scores)))
    first_s = time.perf_counter() - start
    first_extra = _peak_extra_mb(rss_before)
    times, steady = [], []
    for _ in range(repeats):
        base = _reset_peak()
        start = time.perf_counter()
        jax.block_until_ready(run(scores))
        times.append(time.perf_counter() - start)
        steady.append(_peak_extra_mb(base))
    return {
        "method": method,
        "entries": total,
        "tau": tau,
        "scores_mb": total * 4 / 2**20,
        "first_call_s": first_s,
        "seconds": times,
        "median_s": float(np.median(times)),
        "rss_before_mb": rss_before / 1024,
        "first_call_extra_mb": first_extra,
        "steady_extra_mb": max(steady),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ru_maxrss_before_call_mb": maxrss_before / 1024,
        "xla_temp_mb": None if xla_temp is None else xla_temp / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="millions of scores")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "ENTRIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats)))
        return

    rows = []
    for size in args.sizes.split(","):
        total = int(float(size) * 1_000_000)
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--worker", method, str(total)]
            proc = subprocess.run(
                [*cmd, "--repeats", str(args.repeats)], capture_output=True, text=True
            )
            if proc.returncode:
                raise RuntimeError(f"{method} at {total}: {proc.stderr[-2000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"N = {total / 1e6:5.0f} M  {method:9s}  {row['median_s'] * 1e3:9.1f} ms "
                f"(first call {row['first_call_s']:.2f} s)  peak extra "
                f"{row['steady_extra_mb']:8.1f} MB (first call {row['first_call_extra_mb']:.1f} MB;"
                f" scores {row['scores_mb']:.0f} MB)  tau {row['tau']}",
                flush=True,
            )

    ratios = {}
    for total in sorted({r["entries"] for r in rows}):
        by = {r["method"]: r for r in rows if r["entries"] == total}
        taus = {r["tau"] for r in by.values()}
        entry = {"same_tau": len(taus) == 1}
        if "bisection" in by and "sort" in by:
            b, s = by["bisection"], by["sort"]
            entry["time_sort_over_bisection"] = s["median_s"] / b["median_s"]
            entry["peak_extra_mb"] = {m: r["steady_extra_mb"] for m, r in by.items()}
            entry["bisection_peak_extra_over_scores"] = b["steady_extra_mb"] / b["scores_mb"]
            entry["sort_peak_extra_over_scores"] = s["steady_extra_mb"] / s["scores_mb"]
        ratios[str(total)] = entry
        print(f"N = {total / 1e6:.0f} M: {json.dumps(entry)}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "topk_threshold",
        "command": "python " + " ".join(a for a in sys.argv),
        "machine": machine(
            memory_total_gb=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        ),
        "settings": {"sparsity": SPARSITY, "leaf_fractions": FRACTIONS, "repeats": args.repeats},
        "rows": rows,
        "summary": ratios,
    }
    (out / "topk_threshold.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
