"""Does the input pipeline keep up with the device? An epoch through the real loader
against the same epoch with its batches already on the device.

Question: with augmentation on (pad-4 random crop and flip, normalisation), is a
ResNet-18 training epoch fed by :class:`scissorhands_jax.data.ImageSource` as fast as
one whose batches were prepared and placed on the device beforehand? The loader derives
every batch's key on the host and prepares the next batches in a thread while the
device computes, so the ratio should be close to 1 (goal <= 1.05).

Variants, timed side by side in one process, order alternating every round, the first
``--warmup`` steps of each epoch untimed:

- ``on_device``: the epoch's batches made by the same loader, on the device before the
  clock starts (the floor: only the training steps);
- ``loader``: the loader as the training loops use it (prefetch 2);
- ``loader_no_prefetch``: the same loader preparing each batch in the caller (prefetch 0);
- ``device_keys``: the loader as it was before host-side keys: each batch's key folded
  by JAX and read back (``np.asarray(key_data(fold_in(key, i)))``), which waits for the
  step in flight, prepared in the caller.

Data: CIFAR-shaped synthetic uint8 images (32x32x3, 10 classes, no download); model:
ResNet-18 with the CIFAR stem; step: :func:`scissorhands_jax._training.train_step` with
momentum SGD and weight decay.

Run:  python benchmarks/loader_overlap.py [--batch 16] [--steps 6] [--rounds 3]
Writes benchmarks/results/loader_overlap_<platform>.json.
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
from _common import machine

import scissorhands_jax as shs
from scissorhands_jax._loop import TrainState
from scissorhands_jax._training import train_step
from scissorhands_jax.data import ImageSource, ImageTable, Normalization, random_crop_flip
from scissorhands_jax.data.batching import permutation

CIFAR = Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per epoch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    model = shs.linen_model(shs.models.resnet18(), jnp.zeros((1, 32, 32, 3), jnp.float32))
    params, state = model.init(jax.random.key(0))
    tx = shs.sgd(0.05, momentum=0.9, weight_decay=5e-4)
    steps = args.warmup + args.steps
    n = steps * args.batch
    rng = np.random.default_rng(0)
    table = ImageTable(rng.integers(0, 256, (n, 32, 32, 3), np.uint8), rng.integers(0, 10, n))

    def source(prefetch: int) -> ImageSource:
        return ImageSource(
            table, np.arange(n), args.batch, CIFAR, "crop_flip", drop_last=True, prefetch=prefetch
        )

    one_step = train_step(model.loss, tx)  # compiled once, shared by the variants

    def epoch(batches) -> float:
        st = TrainState(0, params, state, tx.init(params))
        start = None
        for i, batch in enumerate(batches):
            if i == args.warmup:
                jax.block_until_ready(st.params)
                start = time.perf_counter()
            st, _ = one_step(st, batch)
        jax.block_until_ready(st.params)
        return time.perf_counter() - start

    def on_device(key):
        batches = jax.device_put(list(source(0)(key)))
        jax.block_until_ready(batches)
        return epoch(batches)

    def device_keys(key):
        order = permutation(key, n)
        for i in range(steps):
            rows = order[i * args.batch : (i + 1) * args.batch]
            images = random_crop_flip(table.images[rows], jax.random.fold_in(key, i))
            yield {"image": CIFAR(images), "label": np.asarray(table.labels[rows], np.int32)}

    variants = {
        "on_device": on_device,
        "loader": lambda key: epoch(source(2)(key)),
        "loader_no_prefetch": lambda key: epoch(source(0)(key)),
        "device_keys": lambda key: epoch(device_keys(key)),
    }
    on_device(jax.random.key(99))  # compile, untimed
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, run in order:
            times[name].append(run(jax.random.key(r)))
        print(
            f"round {r}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True
        )

    med = {k: float(np.median(v)) for k, v in times.items()}
    ratios = {
        k: {
            "median": float(np.median(np.divide(times[k], times["on_device"]))),
            "min": float(np.min(np.divide(times[k], times["on_device"]))),
            "max": float(np.max(np.divide(times[k], times["on_device"]))),
        }
        for k in ("loader", "loader_no_prefetch", "device_keys")
    }
    platform = jax.devices()[0].platform
    print(f"ResNet-18, 32x32x3, batch {args.batch}, {args.steps} timed steps, on {platform}")
    for k in variants:
        print(f"  {k:20s} {med[k]:7.2f} s   {args.steps * args.batch / med[k]:8.1f} images/s")
    goal = ratios["loader"]["median"] <= 1.05
    for k, v in ratios.items():
        print(f"  {k} / on_device = {v['median']:.3f} (min {v['min']:.3f}, max {v['max']:.3f})")
    print("  goal loader / on_device <= 1.05: " + ("met" if goal else "not met"))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "loader_overlap",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "settings": {
            "model": "resnet18 (CIFAR stem)",
            "input": [32, 32, 3],
            "augment": "crop_flip (pad 4) + normalisation",
            "batch": args.batch,
            "timed_steps": args.steps,
            "warmup_steps": args.warmup,
            "rounds": args.rounds,
        },
        "seconds_per_epoch": times,
        "median_seconds_per_epoch": med,
        "over_on_device": ratios,
        "goal": {"loader / on_device <= 1.05": bool(goal)},
    }
    (out / f"loader_overlap_{platform}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
