"""The measuring half of ``diffusion-evaluate`` for a text-conditional generator.

Every model draws ``sample.per_class`` images for each of the forgotten class's three
prompt sets (its training prompts, its paraphrases, its held-out prompts) and for each
other class (its training prompts), the prompts of a set taking turns, plus
``sample.grid_per_class`` images of each prompt the grid shows; all from the same initial
noise for every model. The run's judge
classifies them: the share called the forgotten class under each set is the concept
leakage table (a forgotten concept that returns under a new wording was hidden, not
removed); the other classes' accuracy and the Fréchet distance of their samples to the
real retained images, on the judge's features, say what the forgetting cost.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._versions import versions
from scissorhands_jax.diffusion.grid import annotate, image_grid, save_png, side_by_side
from scissorhands_jax.diffusion.metrics import frechet_distance_features, generation_metrics
from scissorhands_jax.diffusion.sampler import sample
from scissorhands_jax.experiment._generation_setup import PIPELINE_KEYS
from scissorhands_jax.experiment._text_setup import SETS, TextGenerationData, describe
from scissorhands_jax.experiment.pipeline import read_json
from scissorhands_jax.experiment.rundir import write_json_atomic
from scissorhands_jax.models.adapters import predict_probs

SHARE_COLUMNS = {
    "train": "forget_share",
    "paraphrase": "paraphrase_share",
    "heldout": "heldout_share",
}
"""Prompt set of the forgotten class -> its column in ``evaluation.json``'s rows (%)."""
GRID_FILE = "grid.png"


def evaluation_prompts(data: TextGenerationData) -> tuple[dict[str, tuple[int, ...]], list]:
    """``(sets, others)``: the forgotten class's prompt indices per set of :data:`SETS`,
    and, per other class, its training prompts."""
    book, c_f = data.prompts, data.forget_class
    sets = {s: getattr(book, s)[c_f] for s in SETS}
    others = [ix for k, ix in enumerate(book.train) if k != c_f]
    return sets, others


def taking_turns(groups, n: int) -> np.ndarray:
    """``n`` prompt indices per group of ``groups`` (each a sequence of prompt indices),
    its prompts taking turns (``(a, b, c)``, 5 -> ``a b c a b``); an empty group gives
    none. Returns one int32 array, the groups in order."""
    out = [ix[i % len(ix)] for ix in groups if len(ix) for i in range(n)]
    return np.asarray(out, np.int32)


def set_shares(called: np.ndarray, labels: np.ndarray, sets: dict) -> dict[str, float]:
    """% of the samples called the forgotten class (``called``, bool per sample) among
    those generated from each set's prompts (``labels``: the prompt index per sample),
    as the columns of :data:`SHARE_COLUMNS`; an empty set has no column."""
    return {
        SHARE_COLUMNS[name]: float(np.mean(called[np.isin(labels, ix)]) * 100)
        for name, ix in sets.items()
        if len(ix)
    }


def grid_prompts(data: TextGenerationData, sets: dict) -> list[tuple[str, int]]:
    """The grid's columns: two prompts of each set, then one of the next class."""
    book, c_f = data.prompts, data.forget_class
    shown = [(s, i) for s in SETS for i in sets[s][:2]]
    return [*shown, ("other", book.train[(c_f + 1) % data.num_classes][0])]


def evaluate_text_run(
    cfg: dict,
    run_dir: Path,
    data: TextGenerationData,
    model,
    weights: dict[str, Any],
    judge_parts: tuple,
    *,
    fid_features=None,
) -> dict[str, Any]:
    """Samples, judges and draws every model of ``weights`` (name -> parameters, in table
    order); writes ``evaluation.json`` and :data:`GRID_FILE`; returns the payload."""
    judge, features, j_params, j_state = judge_parts
    s, book, c_f = cfg["sample"], data.prompts, data.forget_class
    test_x, test_y = data.test_set()
    test_probs = np.asarray(predict_probs(judge, j_params, j_state, jnp.asarray(test_x)))
    judge_acc = float(np.mean(test_probs.argmax(-1) == test_y) * 100)
    print(f"judge ({cfg['classifier']['model']}): test accuracy {judge_acc:.2f} %")

    sets, others = evaluation_prompts(data)
    shown = grid_prompts(data, sets)
    g = s["grid_per_class"]
    labels = taking_turns([*(sets[s_] for s_ in SETS), *others], s["per_class"])
    drawn = np.repeat(np.asarray([i for _, i in shown], np.int32), g)  # the grid's own
    n = len(labels)
    classes = np.asarray(book.classes)[labels]
    real = data.images("retain")
    real_feats = features(j_params, j_state, data.judge_input(real))
    fid_real = None if fid_features is None else fid_features((real + 1.0) / 2.0)
    kwargs = {k: v for k, v in s.items() if k not in PIPELINE_KEYS["sample"]}
    in_train = np.isin(labels, sets["train"]) | (classes != c_f)
    leak_prompts = [i for s_ in SETS for i in sets[s_]]
    rows, per_prompt, cells = [], {}, []
    for name, params in weights.items():
        start = time.perf_counter()
        key = jax.random.key(s["seed"])
        both = np.asarray(sample(model, params, key, jnp.asarray([*labels, *drawn]), **kwargs))
        x, x_grid = both[:n], both[n:]
        x_judge = data.judge_input(x)
        probs = np.asarray(predict_probs(judge, j_params, j_state, x_judge))
        called = probs.argmax(-1) == c_f
        other = classes != c_f
        row = {"model": name}
        row.update(
            generation_metrics(
                probs[in_train],
                classes[in_train],
                c_f,
                generated_features=features(j_params, j_state, x_judge[other]),
                real_features=real_feats,
            )
        )
        row.update(set_shares(called, labels, sets))
        if fid_features is not None:
            row["fid"] = frechet_distance_features(fid_features((x[other] + 1.0) / 2.0), fid_real)
        log = read_json(run_dir / name / "log.json", {})
        row["rte_s"] = log.get("rte_s", log.get("train_time_s"))
        row["eval_s"] = time.perf_counter() - start
        rows.append(row)
        per_prompt[name] = {
            book.table[i]: float(np.mean(called[labels == i]) * 100)
            for i in leak_prompts
            if np.any(labels == i)
        }
        cells.append([(x_grid[j * g : (j + 1) * g] + 1.0) / 2.0 for j in range(len(shown))])
    _draw(run_dir / GRID_FILE, cells, list(weights), [book.table[i] for _, i in shown], shown, c_f)
    payload = {
        "forget_class": c_f,
        "prompts": describe(book, c_f),
        "judge": cfg["classifier"]["model"],
        "judge_test_acc": judge_acc,
        "sample": s,
        "rows": rows,
        "per_prompt_share": per_prompt,
        "files": [GRID_FILE],
        "devices": [str(d) for d in jax.devices()],
        "versions": versions(),
    }
    write_json_atomic(run_dir / "evaluation.json", payload)
    return payload


def _draw(path, cells, models, texts, shown, forget_class) -> None:
    """One panel per prompt (rows = models, a few samples each), labelled."""
    per = len(cells[0][0])
    h = cells[0][0].shape[1]
    longest = max(len(t) for t in texts) + 10
    scale = max(4, math.ceil(7 * longest / (per * (h + 1) + 1)))  # room for the label
    panels = [
        image_grid(np.stack([row[j] for row in cells]), scale=scale) for j in range(len(texts))
    ]
    heads = [f"[{kind}] {t}" for (kind, _), t in zip(shown, texts, strict=True)]
    title = (
        f"Samples per prompt (rows: models; columns: prompts; class {forget_class} forgotten): "
        "[train] trained prompts, [paraphrase] wordings trained only for other digits, "
        "[heldout] never trained"
    )
    image = annotate(side_by_side(panels), title=title, column_labels=heads, row_labels=models)
    save_png(path, image)
