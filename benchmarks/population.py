"""K digits CNNs through the population API against the same K trained one by one with fit.

Question: how much faster is :func:`scissorhands_jax.population.train_population` than
training the K models of a membership-inference audit one after another with
:func:`scissorhands_jax.fit` (what a loop over ``fit`` costs)? Every variant trains the
same K models (the digits CNN, paired random halves of the 1,437 digits-10 training
examples, per-class strata, batch 64, ``sgd(0.05)``), side by side in one process:

- ``fit``: ``fit`` once per model with the population's keys (``model_keys``) on its
  subset through ``array_source``; with ``--fit-models M < K`` only the first M are
  trained and the time is scaled by K / M (for large K on slow machines), and with
  ``--fit-models 0`` fit is skipped (population times only);
- one population run per backend (``--backends``; ``auto`` is ``sequential`` on CPU and
  ``vmap`` on accelerators), with ``--scan-steps`` (``auto``: scan on accelerators only).

Each variant first runs one untimed epoch (the same shapes, so every program is compiled;
its time is recorded as ``warmup_s``), then ``--repeats`` rounds of the timed
``--epochs``, the variants in a rotated order each round (these machines are shared: the
load drifts). The figure is ``speedup = fit_s / population_s`` per round and its median,
per backend; model 0 of each population is compared with fit's model 0 (max |parameter
difference|) to show the variants train the same models. Goals: ``auto`` no slower than
``fit`` on a CPU (speedup >= 1); at least 20x for K = 256 on an accelerator.

Run:  python benchmarks/population.py [--num-models 16 64] [--epochs 30]
      [--backends vmap sequential] [--fit-models M] [--scan-steps auto|on|off]
      [--repeats 3] [--suffix S]
Writes benchmarks/results/population_<platform>[_S].json (platform: cpu, gpu or tpu).
On an accelerator: python benchmarks/population.py --num-models 256 --fit-models 32
--backends vmap --suffix k256 (fit's time for 256 models scaled from 32).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from _common import machine


def _scan_flag(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-models", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-models-vmap", type=int, default=None, help="skip vmap above this K (slow on CPU)"
    )
    parser.add_argument("--backends", nargs="+", default=["vmap", "sequential"])
    parser.add_argument("--scan-steps", choices=["auto", "on", "off"], default="auto")
    parser.add_argument(
        "--fit-models", type=int, default=None, help="time fit on this many models, scaled"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--suffix", default="", help="appended to the file name: _SUFFIX")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    import scissorhands_jax as shs
    from scissorhands_jax.population import (
        membership_matrix,
        model_keys,
        train_population,
        unstack_tree,
    )

    model = shs.linen_model(shs.DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    train = shs.data.load_digits10().train
    tx, key = shs.sgd(args.lr), jax.random.key(0)
    settings = {"key": key, "batch_size": args.batch_size, "tx": tx}
    record = machine(backend=jax.default_backend())

    def run_fit(membership, num, epochs):  # model 0's parameters
        out = None
        for k in range(num):
            init_key, shuffle_key = model_keys(key, k)
            subset = {name: x[membership[k]] for name, x in train.items()}
            params, _, _ = shs.fit(
                model.loss,
                *model.init(init_key),
                shs.data.array_source(subset, args.batch_size),
                key=shuffle_key,
                epochs=epochs,
                tx=tx,
            )
            out = params if out is None else out
        return jax.block_until_ready(out)

    def run_population(membership, backend, epochs):
        params, _ = train_population(
            model.loss,
            model.init,
            train,
            membership,
            epochs=epochs,
            backend=backend,
            scan_steps=_scan_flag(args.scan_steps),
            **settings,
        )
        return jax.block_until_ready(unstack_tree(params, 0))

    def timed(fn, *fn_args):
        start = time.perf_counter()
        result = fn(*fn_args)
        return time.perf_counter() - start, result

    rows = []
    for num in args.num_models:
        membership = membership_matrix(0, num, len(train["label"]), strata=train["label"])
        fit_num = num if args.fit_models is None else min(num, args.fit_models)
        backends = [
            b
            for b in args.backends
            if b != "vmap" or args.max_models_vmap is None or num <= args.max_models_vmap
        ]
        variants = {b: functools.partial(run_population, membership, b) for b in backends}
        if fit_num:
            variants = {"fit": functools.partial(run_fit, membership, fit_num), **variants}
        warmup = {name: timed(fn, 1)[0] for name, fn in variants.items()}
        names, times, outputs = list(variants), {name: [] for name in variants}, {}
        for r in range(args.repeats):
            # rotate the order: a variant is not always first after the same neighbour
            for name in names[r % len(names) :] + names[: r % len(names)]:
                seconds, outputs[name] = timed(variants[name], args.epochs)
                times[name].append(seconds * (num / fit_num if name == "fit" else 1))
                print(f"K={num} repeat {r}: {name} {times[name][-1]:.1f}s", flush=True)
        row = {"num_models": num, "fit_models_timed": fit_num}
        for name in names:
            entry = {"warmup_s": warmup[name], "seconds": times[name]}
            entry["median_s"] = float(np.median(times[name]))
            if fit_num and name != "fit":
                # per repeat: the two runs closest in time, so the least affected by load
                ratios = np.array(times["fit"]) / np.array(times[name])
                entry["speedup_vs_fit"] = [float(v) for v in ratios]
                entry["speedup_vs_fit_median"] = float(np.median(ratios))
                diffs = jax.tree.map(
                    lambda a, b: jnp.max(jnp.abs(a - b)), outputs[name], outputs["fit"]
                )
                entry["max_abs_param_diff_model0"] = float(max(jax.tree.leaves(diffs)))
                print(
                    f"K={num}: {name} median speedup over fit "
                    f"{entry['speedup_vs_fit_median']:.2f}x",
                    flush=True,
                )
            row[name] = entry
        rows.append(row)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "population",
        "command": "python benchmarks/population.py " + " ".join(sys.argv[1:]),
        "machine": record,
        "auto_backend": "sequential" if jax.default_backend() == "cpu" else "vmap",
        "settings": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "scan_steps": args.scan_steps,
            "repeats": args.repeats,
            "max_models_vmap": args.max_models_vmap,
            "examples_per_model": int(np.sum(membership[0])),
        },
        "rows": rows,
    }
    suffix = f"_{args.suffix}" if args.suffix else ""
    path = out / f"population_{jax.default_backend()}{suffix}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
