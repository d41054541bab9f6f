"""ResNet-18 throughput on CIFAR shapes: training step, saliency pass, repair step.

Question: at paper scale, what does a Scissorhands repair step cost against plain
training? A repair step sees a retain batch and a forget batch (two forward/backward
passes) and applies the GEM projection, so the natural yardstick is two plain training
steps. Timed side by side in one process, alternating their order every round, each with
the programs the library runs:

- ``train_step``: one step of :func:`scissorhands_jax._resumable.fit_resumable` (forward,
  backward, weight decay, momentum SGD, BatchNorm statistics updated);
- ``saliency``: :func:`scissorhands_jax.connection_sensitivity` on one forget batch
  (evaluation mode, as :func:`scissorhands_jax.trim` runs it);
- ``repair_step``: :func:`scissorhands_jax.repair_step`, the repair loop's joint step:
  gradients of the retain and the forget batch, then the GEM projection (t = 1 memory on
  ``layer3, layer4, fc``), weight decay and momentum SGD.

Reported: images/s of each (a repair step counts its retain + forget images) and the
ratio ``repair_step / (2 * train_step)`` in time (goal <= 1.10).

Run:  python benchmarks/resnet18_throughput.py [--batch 16] [--rounds 5]
Writes benchmarks/results/resnet18_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine, resnet18_repair_setup

import scissorhands_jax as shs
from scissorhands_jax import _training as training
from scissorhands_jax._resumable import step_decay_sgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="calls per variant per round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    model, params, state, eligible, repair_tx = resnet18_repair_setup()
    n_params = sum(x.size for x in jax.tree.leaves(params))
    rng = np.random.default_rng(0)

    def batch():
        return {
            "image": jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32),
        }

    retain, forget = batch(), batch()
    train_tx = step_decay_sgd(0.1, steps_per_epoch=176, milestones=(91, 136))
    memory = shs.forget_memory(shs.bind_state(model, state), params, [batch()], eligible=eligible)
    lam = jnp.float32(0.05)
    carry = {
        "train": (params, state, train_tx.init(params)),
        "repair": (params, state, repair_tx.init(params)),
    }
    saliency_loss = shs.bind_state(model, state)

    one_train = training.train_step(model.loss, train_tx)  # compiled once

    def train_step():
        st, loss = one_train(shs.TrainState(0, *carry["train"]), retain)
        carry["train"] = (st.params, st.model_state, st.opt_state)
        return (*carry["train"], loss)

    def saliency():
        return shs.connection_sensitivity(saliency_loss, params, [forget])

    run_repair = shs.repair_step(model.loss, repair_tx)  # compiled once

    def repair_step():
        st, _ = run_repair(shs.TrainState(0, *carry["repair"]), (retain, forget), lam, memory)
        carry["repair"] = (st.params, st.model_state, st.opt_state)
        return carry["repair"]

    variants = {"train_step": train_step, "saliency": saliency, "repair_step": repair_step}
    images = {"train_step": args.batch, "saliency": args.batch, "repair_step": 2 * args.batch}
    for fn in variants.values():  # compile every program, untimed
        jax.block_until_ready(fn())

    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, fn in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                out = fn()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / args.steps)
        print(
            f"round {r}: " + "  ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in times.items()),
            flush=True,
        )

    med = {k: float(np.median(v)) for k, v in times.items()}
    per_round = [
        rep / (2 * tr) for rep, tr in zip(times["repair_step"], times["train_step"], strict=True)
    ]
    ratio = {
        "median": float(np.median(per_round)),
        "min": float(np.min(per_round)),
        "max": float(np.max(per_round)),
    }
    throughput = {k: images[k] / v for k, v in med.items()}
    device = jax.devices()[0].device_kind
    print(f"ResNet-18 ({n_params:,} parameters), 32x32x3, batch {args.batch}, on {device}")
    for k in variants:
        print(f"  {k:12s} {med[k] * 1e3:8.1f} ms   {throughput[k]:8.1f} images/s")
    goal = ratio["median"] <= 1.10
    print(
        f"  repair_step / (2 * train_step) = {ratio['median']:.3f} "
        f"(min {ratio['min']:.3f}, max {ratio['max']:.3f}); goal <= 1.10: "
        + ("met" if goal else "not met")
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "resnet18_throughput",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "settings": {
            "model": "resnet18 (CIFAR stem)",
            "parameters": int(n_params),
            "input": [32, 32, 3],
            "batch": args.batch,
            "memory_num": 1,
            "eligible": "layer3,layer4,fc",
            "rounds": args.rounds,
            "steps_per_round": args.steps,
        },
        "seconds_per_call": times,
        "median_seconds_per_call": med,
        "images_per_second": throughput,
        "repair_over_two_train_steps": ratio,
        "goal": {"repair_step / (2 * train_step) <= 1.10": bool(goal)},
    }
    (out / "resnet18_throughput.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
