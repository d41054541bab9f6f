"""The cost of the projection in a repair step: ResNet-18 on CIFAR shapes.

Question: how much does the GEM projection add to a Scissorhands repair step? A joint
repair step is a retain and a forget forward/backward pass, then the optimiser update
(the step :func:`scissorhands_jax.repair_step` builds for the repair loop; the passes and
the update alone are the same computations jitted here). Three variants are timed side
by side in one process, alternating their order every round:

- ``projected``: the two passes + GEM projection (t memories) + weight decay + SGD;
- ``unprojected``: the same two passes + weight decay + SGD, no projection;
- ``passes``: the two forward/backward passes alone.

Reported: ``projected / unprojected`` (goal <= 1.10) and ``projected / passes``, the
median of the per-round ratios. Because a shared machine makes whole-step times noisy,
the update alone (same gradients, with and without projection) is also timed five
times a round, and the ratio is recomputed from the parts:
``(passes + projected update) / (passes + unprojected update)``. The
memory lives on the eligible leaves ``layer3, layer4, fc`` (CIFAR-10 setting); GEM's
work does not depend on whether a step conflicts (the combination is computed and then
selected), so the timing is the worst case either way.

Run:  python benchmarks/repair_step_resnet18.py [--batch 32] [--rounds 9] [--memory-num 1]
Writes benchmarks/results/repair_step_resnet18.json.
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
import optax
from _common import machine, resnet18_repair_setup

import scissorhands_jax as shs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="retain and forget batch size")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    parser.add_argument("--memory-num", type=int, default=1, help="t, the memories")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    model, params, state, eligible, tx = resnet18_repair_setup()
    n_params = sum(x.size for x in jax.tree.leaves(params))
    rng = np.random.default_rng(0)

    def batch():
        return {
            "image": jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32),
        }

    retain, forget = batch(), batch()
    memory = shs.forget_memory(
        shs.bind_state(model, state),
        params,
        [batch() for _ in range(args.memory_num)],
        eligible=eligible,
    )
    lam = jnp.float32(0.05)
    carry = {"state": shs.TrainState(0, params, state, tx.init(params))}
    repair_step = shs.repair_step(model.loss, tx)

    @jax.jit
    def grad_pass(p, s, b):
        return jax.value_and_grad(lambda q: model.loss(q, s, b, True), has_aux=True)(p)

    def passes():
        st = carry["state"]
        (_, s), g_r = grad_pass(st.params, st.model_state, retain)
        (_, s), g_f = grad_pass(st.params, s, forget)
        return g_r, g_f, s

    @jax.jit
    def update(p, o, g_r, g_f, mem):  # mem None: no projection
        grads = jax.tree.map(lambda a, b: a - lam * b, g_r, g_f)
        u, o = tx.update(grads, o, p, memory=mem)
        return optax.apply_updates(p, u), o

    def step(project):
        def run():
            st, _ = repair_step(carry["state"], (retain, forget), lam, memory, project)
            carry["state"] = st
            return st.params, st.opt_state, st.model_state

        return run

    variants = {
        "projected": step(True),
        "unprojected": step(False),
        "passes": passes,
    }
    for fn in variants.values():  # compile every program, untimed
        jax.block_until_ready(fn())
    # the update alone on fixed gradients, with and without the projection: the
    # projection's own cost, measured many times because it is small
    g_r, g_f, _ = passes()
    updates = {
        project: lambda project=project: update(
            carry["state"].params, carry["state"].opt_state, g_r, g_f, memory if project else None
        )
        for project in (True, False)
    }
    update_s: dict[str, list[float]] = {"projected": [], "unprojected": []}

    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, fn in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                out = fn()
            jax.block_until_ready(out)  # every output: no pass may run on into the next
            times[name].append((time.perf_counter() - start) / args.steps)
        for project, name in ((True, "projected"), (False, "unprojected"))[:: 1 - 2 * (r % 2)]:
            for _ in range(5):
                start = time.perf_counter()
                jax.block_until_ready(updates[project]())
                update_s[name].append(time.perf_counter() - start)
        print(
            f"round {r}: " + "  ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in times.items()),
            flush=True,
        )

    med = {k: float(np.median(v)) for k, v in times.items()}
    upd = {k: float(np.median(v)) for k, v in update_s.items()}
    # the same ratio from its parts: two passes + the update with / without projection
    from_parts = (med["passes"] + upd["projected"]) / (med["passes"] + upd["unprojected"])
    per_round = {
        "projected/unprojected": [
            a / b for a, b in zip(times["projected"], times["unprojected"], strict=True)
        ],
        "projected/passes": [
            a / b for a, b in zip(times["projected"], times["passes"], strict=True)
        ],
    }
    ratios = {
        k: {
            "median": float(np.median(v)),
            "min": float(np.min(v)),
            "max": float(np.max(v)),
        }
        for k, v in per_round.items()
    }
    projected = int(carry["opt"][0].projected)
    print(f"ResNet-18 ({n_params:,} parameters), batch {args.batch}, t = {args.memory_num}")
    for k, v in med.items():
        print(f"  {k:12s} median {v * 1e3:8.1f} ms per step")
    for k, v in ratios.items():
        print(f"  {k:22s} {v['median']:.3f} (min {v['min']:.3f}, max {v['max']:.3f})")
    print(
        f"  update alone: projected {upd['projected'] * 1e3:.1f} ms, unprojected "
        f"{upd['unprojected'] * 1e3:.1f} ms; from the parts, projected/unprojected = "
        f"{from_parts:.3f}"
    )
    goal = ratios["projected/unprojected"]["median"] <= 1.10
    print(f"  goal projected/unprojected <= 1.10: {'met' if goal else 'not met'}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "repair_step_resnet18",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "settings": {
            "model": "resnet18 (CIFAR stem)",
            "parameters": n_params,
            "input": [32, 32, 3],
            "batch": args.batch,
            "memory_num": args.memory_num,
            "eligible": "layer3,layer4,fc",
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "projected_steps_counted": projected,
        },
        "seconds_per_step": times,
        "median_seconds_per_step": med,
        "ratios": ratios,
        "update_seconds": update_s,
        "median_update_seconds": upd,
        "projected/unprojected_from_parts": from_parts,
        "goal": {"projected/unprojected <= 1.10": bool(goal)},
    }
    (out / "repair_step_resnet18.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
