"""The digits generation demo behind ``scissorhands generate-demo`` (no download).

scikit-learn's 8x8 digits in [-1, 1] train a small class-conditional DDPM
(:class:`~scissorhands_jax.models.unet.UNet`) and, on the same training split, a
DigitsCNN that judges the samples. One class is then forgotten by Scissorhands (the
release's class recipe :math:`L_r - \\lambda L_f`, and its anchor recipe), and by the
baselines FT, SalUn and Retrain. Every model generates the same seeded batch (same
initial noise per slot); the run writes ``metrics.json``, one PNG grid per model
(rows: classes 0..9), ``before_after.png`` (original | Scissorhands with
:math:`L_r - \\lambda L_f` | Scissorhands with the anchor recipe) and a checkpoint of
every model and of the classifier (:class:`~scissorhands_jax.Checkpoints`, step 0,
``{"params": ...}``). ``scissorhands diffusion-train`` / ``-unlearn`` / ``-evaluate``
run the same recipe from a config (the installed config ``digits_ddpm_class0``) with
resumable checkpoints.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._versions import versions
from scissorhands_jax.checkpoint import Checkpoints
from scissorhands_jax.data import array_source, load_digits10
from scissorhands_jax.diffusion.baselines import (
    finetune_diffusion,
    retrain_diffusion,
    salun_diffusion,
    train_diffusion,
)
from scissorhands_jax.diffusion.grid import (
    annotate,
    class_labels,
    image_grid,
    save_png,
    side_by_side,
)
from scissorhands_jax.diffusion.metrics import (
    feature_extractor,
    frechet_distance_features,
    generation_metrics,
)
from scissorhands_jax.diffusion.model import diffusion_model, diffusion_source
from scissorhands_jax.diffusion.sampler import sample
from scissorhands_jax.diffusion.schedule import make_schedule
from scissorhands_jax.diffusion.unlearn import scissorhands_diffusion
from scissorhands_jax.experiment.demo import prepare_out_dir, write_json_atomic
from scissorhands_jax.models import DigitsCNN, linen_model
from scissorhands_jax.models.adapters import predict_probs
from scissorhands_jax.models.unet import UNet
from scissorhands_jax.parallel import on_mesh
from scissorhands_jax.training import fit, sgd

METHODS = (
    "scissorhands",
    "scissorhands_anchor",
    "scissorhands_trim_only",
    "finetune",
    "salun",
    "retrain",
)

DEMO_CONFIG: dict[str, Any] = {
    "image_size": 8,
    "forget_class": 0,
    "seed": 0,
    "diffusion": {"schedule": "linear", "timesteps": 200, "p_uncond": 0.1},
    "unet": {"ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (4,)},
    "train": {"steps": 1000, "lr": 2e-3, "batch_size": 64, "grad_clip": 1.0},
    "classifier": {"epochs": 10, "lr": 0.05, "batch_size": 64},
    "sample": {"method": "ddim", "num_steps": 25, "guidance_scale": 2.0, "per_class": 50},
    "grid_per_class": 8,
    "scissorhands": {
        "eligible": "up_attn",
        "sparsity": 0.9,
        "saliency_guidance": 2.0,
        "reinit": "model",
        "objective": "contrast",
        "lam": 0.1,
        "lr": 2e-4,
        "steps": 100,
        "batch_size": 64,
    },
    "scissorhands_anchor": {
        "eligible": "up_attn",
        "sparsity": 0.9,
        "saliency_guidance": 2.0,
        "reinit": "model",
        "objective": "anchor",
        "anchor": "next",
        "lam": 1.0,
        "lr": 3e-4,
        "steps": 100,
        "batch_size": 64,
    },
    "finetune": {"steps": 100, "lr": 1e-4, "batch_size": 64},
    # SalUn's CIFAR-10 α = 1e-3 multiplies a retain loss *summed* over 3,072 pixel values;
    # with our mean loss the same balance is α = 1e-3 · 3072 ≈ 3.
    "salun": {
        "mask_ratio": 0.5,
        "saliency_guidance": 2.0,
        "anchor": "next",
        "alpha": 3.0,
        "lr": 1e-4,
        "steps": 100,
        "batch_size": 64,
    },
    "retrain": {"steps": 1000, "lr": 2e-3, "batch_size": 64},
}
"""Settings of the demo. The diffusion sizes are scaled to digits (T = 200 with the DDPM
linear schedule's β range scaled by 1000 / T); sparsity 0.9 over the 177k-parameter
UNet leaves about 1k re-initialised entries in the up-path attention (963 with seed 0).
The unlearning methods get the same budget of 100 steps (SalUn's CIFAR-10 run uses
500)."""


def _upsample(x: np.ndarray, size: int) -> np.ndarray:
    factor = size // x.shape[1]
    return np.repeat(np.repeat(x, factor, axis=1), factor, axis=2) if factor > 1 else x


def _downsample(x: jax.Array, size: int) -> jax.Array:
    factor = x.shape[1] // size
    if factor == 1:
        return x
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def _merge(base: dict, overrides: dict | None) -> dict:
    cfg = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise ValueError(f"generate-demo: unknown setting {key!r}; known: {sorted(cfg)}.")
        if isinstance(cfg[key], dict) and isinstance(value, dict):
            unknown = set(value) - set(cfg[key])
            if unknown:
                raise ValueError(f"generate-demo: unknown {key} settings {sorted(unknown)}.")
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _check(cfg: dict, methods: Sequence[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}.")
    if cfg["image_size"] not in (8, 16):
        raise ValueError(f"image_size must be 8 or 16, got {cfg['image_size']!r}.")
    if not 0 <= cfg["forget_class"] <= 9:
        raise ValueError(f"forget_class must be a digit 0..9, got {cfg['forget_class']!r}.")
    if cfg["sample"]["per_class"] < 2:
        raise ValueError("sample.per_class must be at least 2 (the Fréchet distance needs it).")


def _unlearn(name, cfg, model, params, retain, forget, key):
    """Runs one method; returns its parameters and what to record beside the metrics."""
    if name.startswith("scissorhands"):
        kw = dict(cfg["scissorhands_anchor" if name == "scissorhands_anchor" else "scissorhands"])
        if name == "scissorhands_trim_only":
            kw["steps"] = 0
        res = scissorhands_diffusion(model, params, retain=retain, forget=forget, key=key, **kw)
        extra = {"reinitialised": res.log[0]["reinitialised"]}
    elif name == "salun":
        res = salun_diffusion(model, params, retain=retain, forget=forget, key=key, **cfg["salun"])
        extra = {"mask_selected": res.log[0]["selected"]}
    elif name == "finetune":
        new, log = finetune_diffusion(model, params, retain=retain, key=key, **cfg["finetune"])
        return new, {"final_loss_retain": log[-1]["loss_retain"]}
    else:
        new, log = retrain_diffusion(model, retain=retain, key=key, **cfg["retrain"])
        return new, {"final_loss_retain": log[-1]["loss_retain"]}
    if len(res.log) > 1:
        extra["final_loss_retain"] = res.log[-1]["loss_retain"]
        extra["final_loss_forget"] = res.log[-1]["loss_forget"]
    return res.params, extra


def _placed(params, mesh):
    return params if mesh is None else on_mesh(params, mesh)


def run_generate_demo(
    out: str | Path,
    *,
    overrides: dict | None = None,
    methods: Sequence[str] = METHODS,
    progress: bool = False,
    log: Callable[[str], None] = print,
    fid_features: Callable[[np.ndarray], np.ndarray] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Runs the digits generation demo and writes its files under ``out``.

    Args:
      out: output directory (created; must not hold a previous run's checkpoints).
      overrides: settings replacing those of :data:`DEMO_CONFIG` (one level deep).
      methods: which unlearning methods to run (subset of :data:`METHODS`).
      progress: show progress bars.
      log: where progress lines go.
      fid_features: ``features(images) -> (N, D)`` for images (N, H, W, C) in [0, 1]
        (e.g. the pool features of your Inception-v3 weights); when given, every row
        also gets ``fid``: the Fréchet distance in that space between the samples of the
        other classes and the real images of those classes.
      mesh: train the models and run the methods data-parallel on this mesh (the
        generator starts there; the methods follow its parameters); None: one device.

    Returns:
      The ``metrics.json`` payload.

    Raises:
      ValueError: unknown settings or methods, or an unusable output directory, before
        any training.
    """
    cfg = _merge(DEMO_CONFIG, overrides)
    _check(cfg, methods)
    out = prepare_out_dir(out)
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        raise ValueError(f"{ckpt_dir} holds checkpoints of an earlier run; use a new --out.")
    start_all = time.perf_counter()
    size, c_f, seed = cfg["image_size"], cfg["forget_class"], cfg["seed"]
    split = load_digits10("random10", 0)
    images = _upsample(split.train["image"] * 2.0 - 1.0, size).astype(np.float32)
    labels = split.train["label"]
    retain = {"image": images[labels != c_f], "label": labels[labels != c_f]}
    forget = {"image": images[labels == c_f], "label": labels[labels == c_f]}
    timing: dict[str, float] = {}

    # the judge: a DigitsCNN on the same training split (8x8, [0, 1])
    t0 = time.perf_counter()
    clf = linen_model(DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    c_params, c_state = clf.init(jax.random.key(seed))
    cc = cfg["classifier"]
    c_params, c_state, _ = fit(
        clf.loss,
        c_params,
        c_state,
        array_source(split.train, cc["batch_size"]),
        key=jax.random.key(seed + 1),
        epochs=cc["epochs"],
        tx=sgd(cc["lr"]),
        mesh=mesh,
    )
    test_probs = np.asarray(predict_probs(clf, c_params, c_state, jnp.asarray(split.test["image"])))
    clf_acc = float(np.mean(test_probs.argmax(-1) == split.test["label"]) * 100)
    timing["classifier_s"] = time.perf_counter() - t0
    log(f"classifier: test accuracy {clf_acc:.2f} % ({timing['classifier_s']:.1f} s)")

    penultimate = feature_extractor(DigitsCNN(), layer="Dense_0")

    def judge(x):  # [-1, 1] at model resolution -> classifier probabilities and features
        x01 = _downsample((x + 1.0) / 2.0, 8)
        probs = np.asarray(predict_probs(clf, c_params, c_state, x01))
        feats = penultimate({"params": c_params}, x01)
        return probs, feats

    real_other = _downsample(jnp.asarray((retain["image"] + 1.0) / 2.0), 8)
    real_feats = penultimate({"params": c_params}, real_other)
    fid_real = None if fid_features is None else fid_features((retain["image"] + 1.0) / 2.0)

    # the generator
    dc = cfg["diffusion"]
    sched = make_schedule(
        dc["schedule"],
        dc["timesteps"],
        beta_start=1e-4 * 1000 / dc["timesteps"],
        beta_end=0.02 * 1000 / dc["timesteps"],
    )
    unet = UNet(
        num_classes=10,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()},
    )
    model = diffusion_model(
        unet, image_shape=(size, size, 1), num_classes=10, schedule=sched, p_uncond=dc["p_uncond"]
    )
    tc = cfg["train"]
    t0 = time.perf_counter()
    params, train_log = train_diffusion(
        model,
        _placed(model.init(jax.random.key(seed + 2))[0], mesh),
        diffusion_source({"image": images, "label": labels}, tc["batch_size"]),
        key=jax.random.key(seed + 3),
        steps=tc["steps"],
        lr=tc["lr"],
        grad_clip=tc["grad_clip"],
        log_every=max(tc["steps"] // 4, 1),
        progress=progress,
        desc="train ddpm",
    )
    timing["train_ddpm_s"] = time.perf_counter() - t0
    log(
        f"ddpm: {tc['steps']} steps, final loss {train_log[-1]['loss_retain']:.4f} "
        f"({timing['train_ddpm_s']:.1f} s)"
    )

    sc = cfg["sample"]
    sample_labels = jnp.repeat(jnp.arange(10), sc["per_class"])
    sample_key = jax.random.key(seed + 4)
    grids: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    digit_rows = class_labels(10, c_f, [f"digit {d}" for d in range(10)])  # the grids' rows

    def save_params(name: str, tree) -> None:  # one step-0 checkpoint per model
        with Checkpoints(ckpt_dir / name, identity={"demo": name, "config": cfg}, keep=1) as ck:
            ck.save(0, {"params": tree}, info={"final": True})

    def evaluate(name: str, p, extra: dict) -> None:
        t1 = time.perf_counter()
        x = sample(
            model,
            p,
            sample_key,
            sample_labels,
            method=sc["method"],
            num_steps=sc["num_steps"],
            guidance_scale=sc["guidance_scale"],
        )
        probs, feats = judge(x)
        lab = np.asarray(sample_labels)
        row = {"method": name, **extra}
        row.update(
            generation_metrics(
                probs,
                lab,
                c_f,
                generated_features=feats[lab != c_f],
                real_features=real_feats,
            )
        )
        if fid_features is not None:
            gen01 = np.asarray((x[lab != c_f] + 1.0) / 2.0)
            row["fid"] = frechet_distance_features(fid_features(gen01), fid_real)
        row["eval_s"] = time.perf_counter() - t1
        rows.append(row)
        per = np.asarray((x + 1.0) / 2.0).reshape(10, sc["per_class"], size, size, 1)
        grids[name] = image_grid(per[:, : cfg["grid_per_class"]], scale=32 // size)
        title = f"{name}: generated digits, one row per class"
        image = annotate(grids[name], title=title, row_labels=digit_rows)
        save_png(out / f"grid_{name}.png", image)
        save_params(name, p)
        log(
            f"{name}: forget share {row['forget_share']:.1f} %, other-class accuracy "
            f"{row['other_acc']:.1f} %, Fréchet {row['frechet']:.3f}"
            + (f" ({extra['time_s']:.1f} s)" if "time_s" in extra else "")
        )

    save_params("classifier", c_params)
    evaluate("original", params, {"time_s": timing["train_ddpm_s"]})
    key = jax.random.key(seed + 5)
    for name in methods:
        t0 = time.perf_counter()
        new, extra = _unlearn(name, cfg, model, params, retain, forget, key)
        jax.block_until_ready(new)
        extra["time_s"] = time.perf_counter() - t0
        evaluate(name, new, extra)
    after = [m for m in ("scissorhands", "scissorhands_anchor") if m in grids]
    if after:  # original | Scissorhands L_r - lam L_f | Scissorhands anchor recipe
        both = side_by_side([grids[m] for m in ("original", *after)])
        title = f"Generated digits before and after forgetting class {c_f}"
        heads = ["before: original", *(f"after: {m}" for m in after)]
        image = annotate(both, title=title, column_labels=heads, row_labels=digit_rows)
        save_png(out / "before_after.png", image)
    timing["total_s"] = time.perf_counter() - start_all
    payload = {
        "config": cfg,
        "classifier_test_acc": clf_acc,
        "rows": rows,
        "timing": timing,
        "files": sorted(p.name for p in out.glob("*.png")),
        "devices": [str(d) for d in jax.devices()],
        "versions": versions(),
    }
    write_json_atomic(out / "metrics.json", payload)
    return payload


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The metrics as a Markdown table."""
    head = "| method | forget share % | forget prob | other-class acc % | Fréchet (clf) | time s |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['forget_share']:.1f} | {r['forget_prob']:.3f} | "
            f"{r['other_acc']:.1f} | {r['frechet']:.3f} | {r.get('time_s', float('nan')):.1f} |"
        )
    return "\n".join(lines)
