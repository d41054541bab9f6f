"""Scissorhands against a full retrain on digits-10, timed side by side in one process.

Question: how long does unlearning take relative to retraining from scratch (the gold
standard it replaces)? Both are measured on the same machine in the same run,
alternating, in two regimes:

- cold: ``jax.clear_caches()`` before each run, so every XLA compilation is included
  (what a user pays for the first request in a fresh process);
- warm: the same run again with the compiled programs cached (every later request).

Retrain = init + 30 epochs of SGD on the retain set (the digits-10 protocol). Scissorhands =
saliency + re-init + 10 repair epochs with the GEM projection (the digits-10 protocol).

Run:  python benchmarks/digits_unlearn_vs_retrain.py [--repeats 3]
Writes benchmarks/results/digits_unlearn_vs_retrain.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import scissorhands_jax as shs
from scissorhands_jax._method import check_settings
from scissorhands_jax.experiment.config import load_config, methods_of

CONFIG = load_config("digits10_random10")
TRAIN = CONFIG["train"]
"""Original and Retrain: the digits config's schedule (SGD lr 0.05, batch 64, 30 epochs)."""
UNLEARN = {k: v for k, v in methods_of(CONFIG)["scissorhands"].items() if k != "eligible"}
"""Scissorhands: the digits config's unlearn section (all but the first conv eligible)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    split = shs.data.load_digits10("random10", 0)
    model = shs.linen_model(shs.DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    tx = shs.sgd(TRAIN["lr"])

    def retrain(data):
        params, state = model.init(jax.random.key(0))
        params, state, _ = shs.fit(
            model.loss,
            params,
            state,
            shs.data.array_source(data, TRAIN["batch_size"]),
            key=jax.random.key(1),
            epochs=TRAIN["epochs"],
            tx=tx,
        )
        return jax.block_until_ready(params), state

    original = retrain(split.train)

    def unlearn():
        result = shs.scissorhands(
            model,
            *original,
            retain=split.retain,
            forget=split.forget,
            key=jax.random.key(2),
            eligible="all_but_first_conv",
            **check_settings(progress=False, **UNLEARN),
        )
        return jax.block_until_ready(result.params)

    def timed(fn, cold):
        if cold:
            jax.clear_caches()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    rows = {"cold": [], "warm": []}
    for r in range(args.repeats):
        order = [("retrain", lambda: retrain(split.retain)), ("scissorhands", unlearn)]
        if r % 2:
            order.reverse()
        for regime in ("cold", "warm"):
            if regime == "warm":  # compile both programs' sets first, untimed
                for _, fn in order:
                    fn()
            t = {name: timed(fn, regime == "cold") for name, fn in order}
            t["ratio"] = t["scissorhands"] / t["retrain"]
            rows[regime].append(t)
            print(
                f"repeat {r} {regime:4s}: retrain {t['retrain']:.2f}s  "
                f"scissorhands {t['scissorhands']:.2f}s  ratio {t['ratio']:.3f}"
            )

    summary = {}
    for regime, ts in rows.items():
        ratios = np.array([t["ratio"] for t in ts])
        summary[regime] = {
            "retrain_s_median": float(np.median([t["retrain"] for t in ts])),
            "scissorhands_s_median": float(np.median([t["scissorhands"] for t in ts])),
            "ratio_median": float(np.median(ratios)),
            "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()),
        }
        print(
            f"{regime}: median ratio scissorhands / retrain = {summary[regime]['ratio_median']:.3f}"
            f" (goal <= 0.5)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "digits_unlearn_vs_retrain",
        "command": f"python benchmarks/digits_unlearn_vs_retrain.py --repeats {args.repeats}",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
        },
        "settings": {"train": TRAIN, "unlearn": UNLEARN},
        "runs": rows,
        "summary": summary,
    }
    (out / "digits_unlearn_vs_retrain.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
