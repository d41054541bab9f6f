# ruff: noqa  (a record of commit e9166e8; its imports no longer exist)
"""How the digits-10 hyperparameters of every method were chosen (a record, not a module).

The release settings (docs/metrics.md) are tuned for CIFAR-scale data and barely move a digits model
(e.g. GA at lr 1e-4 for 5 epochs is 15 steps on 143 examples). Each method's learning
rate (ℓ1-sparse: α; IU: α) is therefore picked from a small grid around its release
value on a *tuning seed* (100) that is not among the reported seeds 0-4, by the mean
Avg. Gap (entropy MIA) over both scenarios. Scissorhands gets the same budget: a grid of
learning rates around its release value, four like SalUn's, plus one where the best sat on
the grid's edge, as for every method. Writes tuning.json beside this file; with method
names as arguments it runs only those and merges them into an existing tuning.json.

Run (at commit e9166e8, which it was written for): python
experiments/results/digits10_compare/tune_baselines.py [METHOD ...]. It imports the digits
runner that the experiment configs replaced and no longer runs against this package; the
values it chose are the ``methods`` section of ``scissorhands_jax/configs/digits10_random10.py``.
(about 15 minutes for all)
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

from scissorhands_jax.baselines import METHODS
from scissorhands_jax.compare import DIGITS_HYPERPARAMETERS
from scissorhands_jax.data import load_digits10
from scissorhands_jax.demo import TRAIN_DEFAULTS, UNLEARN_DEFAULTS, split_predictions, train_digits
from scissorhands_jax.metrics import against_retrain, evaluation_suite
from scissorhands_jax.models import DigitsCNN, linen_model

SEED = 100
GRID = {  # the release value and neighbours; a value was added wherever the best sat on an edge
    "ft": {"lr": [0.003, 0.01, 0.03, 0.1, 0.3]},
    "ga": {"lr": [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]},
    "rl": {"lr": [0.001, 0.003, 0.01, 0.03]},
    "l1_sparse": {"alpha": [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]},
    "salun": {"lr": [1.5e-3, 5e-3, 1.5e-2, 5e-2]},
    "iu": {"alpha": [10.0, 100.0, 1000.0, 10000.0]},
    "be": {"lr": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]},
    "bs": {"lr": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]},
    "scrub": {"lr": [5e-4, 5e-3, 2e-2]},
    "scissorhands": {"lr": [5e-4, 1.5e-3, 5e-3, 1.5e-2, 5e-2]},
}
BASE = {  # the release values, scaled to digits only in batch size and IU's m
    "ft": {"lr": 0.01, "epochs": 10, "batch_size": 64},
    "ga": {"lr": 1e-4, "epochs": 5, "batch_size": 64},
    "rl": {"lr": 0.01, "epochs": 10, "batch_size": 64},
    "l1_sparse": {"alpha": 1e-4, "lr": 0.01, "epochs": 10, "batch_size": 64},
    "salun": {"ratio": 0.5, "lr": 5e-3, "epochs": 10, "batch_size": 64},
    "iu": {"alpha": 10.0, "damping": 1.0, "fisher_examples": 256, "batch_size": 64},
    "be": {"lr": 1e-6, "epochs": 10, "batch_size": 64},
    "bs": {"bound": 0.1, "lr": 1e-6, "epochs": 10, "batch_size": 64},
    "scrub": {"lr": 5e-4, "epochs": 3, "max_epochs": 2, "batch_size": 64, "forget_batch_size": 32},
    "scissorhands": {"eligible": "all_but_first_conv", **UNLEARN_DEFAULTS},
}


def main(only: list[str]) -> None:
    path = Path(__file__).with_name("tuning.json")
    previous = json.loads(path.read_text())["runs"] if only and path.exists() else []
    grid_now = {m: g for m, g in GRID.items() if not only or m in only}
    model = linen_model(DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    train = TRAIN_DEFAULTS
    schedule = {k: train[k] for k in ("lr", "epochs", "batch_size")}
    params, state, _ = train_digits(model, load_digits10("random10", SEED).train, SEED, train)
    results = []
    for scenario in ("random10", "class0"):
        split = load_digits10(scenario, SEED)
        ref = METHODS["retrain"](
            model,
            None,
            None,
            retain=split.retain,
            forget=split.forget,
            key=jax.random.key(2000 + SEED),
            **schedule,
        )
        reference = evaluation_suite(**split_predictions(model, ref.params, ref.model_state, split))
        for name, grid in grid_now.items():
            ((param, values),) = grid.items()
            for value in values:
                hp = {**BASE[name], param: value}
                done = [
                    e
                    for e in previous
                    if e["scenario"] == scenario
                    and e["method"] == name
                    and e["hyperparameters"] == json.loads(json.dumps(hp))
                ]
                if done:
                    continue
                entry = {"scenario": scenario, "method": name, "hyperparameters": hp}
                try:
                    r = METHODS[name](
                        model,
                        params,
                        state,
                        retain=split.retain,
                        forget=split.forget,
                        key=jax.random.key(2000 + SEED),
                        **hp,
                    )
                    row = evaluation_suite(
                        **split_predictions(model, r.params, r.model_state, split)
                    )
                    entry.update(row, **against_retrain(row, reference))
                except Exception as err:
                    entry["error"] = f"{type(err).__name__}: {err}"
                print(
                    json.dumps(
                        {k: entry.get(k) for k in ("scenario", "method", "error")}
                        | {param: value, "avg_gap": entry.get("avg_gap")}
                    ),
                    flush=True,
                )
                results.append(entry)
    results = (
        [e for e in previous if e["method"] not in grid_now]
        + [e for e in previous if e["method"] in grid_now]
        + results
    )
    chosen = {}
    for name, grid in GRID.items():
        ((param, values),) = grid.items()
        scores = {}
        for value in values:
            gaps = [
                e.get("avg_gap", float("inf"))
                for e in results
                if e["method"] == name and e["hyperparameters"][param] == value
            ]
            scores[value] = sum(gaps) / len(gaps)
        best = min(scores, key=scores.get)
        chosen[name] = {"param": param, "scores": scores, "chosen": best}
    out = {"seed": SEED, "grid": GRID, "base": BASE, "chosen": chosen, "runs": results}
    path.write_text(json.dumps(out, indent=2))
    for name, c in chosen.items():
        used = DIGITS_HYPERPARAMETERS[name][c["param"]]
        print(
            f"{name}: {c['param']}={c['chosen']} (mean gap {c['scores'][c['chosen']]:.2f}); "
            f"DIGITS_HYPERPARAMETERS has {used}"
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
