"""The measuring step of the SD recipes: images of every UNet of a run, judged.

Each model's images go to ``eval/<model>/`` (PNGs and ``index.csv``, resumable) with a
``setting.json`` naming what drew them; a folder drawn under other settings is refused,
or, with ``overwrite``, drawn again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scissorhands_jax._checkpoint import CheckpointError, Checkpoints, check_directory
from scissorhands_jax._versions import versions
from scissorhands_jax.experiment._sd_setup import (
    SD_METHODS,
    identity,
    load_sd,
    model_identity,
    prompts_of,
    sample_settings,
)
from scissorhands_jax.experiment.pipeline import read_json, restore
from scissorhands_jax.experiment.rundir import check_setting, write_json_atomic

NUDENET_MISSING = (
    "NudeNet is not installed, so no detections were counted: pip install "
    "'scissorhands_jax[sd-eval]' (or set eval.nudenet=False)"
)


def prompt_file(cfg: dict, run_dir: Path) -> Path:
    """``eval.prompts``, or for the class recipe its class prompts written to
    ``eval/prompts.txt``.

    Raises:
      ValueError: the nudity recipe without ``eval.prompts``, or a missing file.
    """
    given = cfg["eval"]["prompts"]
    if given is not None:
        if not Path(given).is_file():
            raise ValueError(f"eval.prompts {given!r} is not a file (a prompt .csv or .txt).")
        return Path(given)
    if cfg["recipe"]["concept"] != "class":
        raise ValueError(
            "eval.prompts is not set: give the prompt file to generate from, e.g. the I2P "
            "prompts with --set eval.prompts=PATH/i2p.csv (columns prompt, evaluation_seed)."
        )
    path = run_dir / "eval" / "prompts.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + "\n" for p in prompts_of(cfg)[0]))
    return path


def models_present(run_dir: Path) -> list[str]:
    """``original`` and every method of :data:`SD_METHODS` with a checkpoint, in order."""
    return ["original", *(m for m in SD_METHODS if check_directory(run_dir / m / "checkpoints"))]


def evaluate_sd(
    cfg: dict,
    run_dir: Path,
    *,
    classify: Callable | None = None,
    features: Callable | None = None,
    detector: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generates ``eval.images_per_prompt`` images per prompt from every UNet of the run
    and judges them; writes ``evaluation.json``.

    Args:
      cfg: the run's config.
      run_dir: the run directory (already checked).
      classify: ``classify(uint8 images (N, H, W, 3)) -> logits or labels`` of the class
        prompts' classes: adds ``forget_acc``, ``other_acc`` (class recipe).
      features: ``features(images in [0, 1]) -> (N, D)`` for FID against
        ``eval.real_dir`` (else ``eval.inception_weights`` is used, when set).
      detector: a NudeNet-like ``detect(path) -> list[dict]`` (default: ``nudenet``'s).
      overwrite: replace ``evaluation.json`` and images drawn under other settings.

    Returns:
      The ``evaluation.json`` payload.
    """
    from scissorhands_jax import sd

    e = cfg["eval"]
    prompts = prompt_file(cfg, run_dir)
    fid = None
    if e["real_dir"] and features is not None:
        fid = {"features": features}
    elif e["real_dir"] and e["inception_weights"]:
        fid = {"inception_weights": e["inception_weights"]}
    model, scheduler = load_sd(cfg)
    rows, notes = [], []
    for name in models_present(run_dir):
        params = model.unet_params
        if name != "original":
            params = load_unlearned_unet(cfg, run_dir, name, params)
        out = run_dir / "eval" / name
        drawn_by = {"model": model_identity(cfg), "unet": name, "sample": cfg["sample"],
                    "prompts": str(prompts), "image_size": cfg["data"]["image_size"],
                    **{k: e[k] for k in ("images_per_prompt", "seed")}}  # fmt: skip
        if name != "original":
            drawn_by["settings"] = identity(cfg, name)["settings"]
        _check_drawn(out, drawn_by, overwrite)
        start = time.perf_counter()
        sd.generate_eval_set(model._replace(unet_params=params), prompts, out,
                             images_per_prompt=e["images_per_prompt"], seed=e["seed"],
                             batch_size=cfg["data"]["batch_size"],
                             **sample_settings(cfg, scheduler))  # fmt: skip
        row = {"model": name, "images": len(sd.image_files(out))}
        row["sample_s"] = time.perf_counter() - start
        row["rte_s"] = read_json(run_dir / name / "log.json", {}).get("rte_s")
        if e["nudenet"]:
            try:
                counts = sd.nudenet_counts(out, threshold=e["nudenet_threshold"], detector=detector)
                row["nudenet"] = {k: v for k, v in counts.items() if k != "flagged_files"}
            except ImportError:
                row["nudenet"] = None
                if NUDENET_MISSING not in notes:
                    notes.append(NUDENET_MISSING)
        if classify is not None and cfg["recipe"]["concept"] == "class":
            r = cfg["recipe"]
            classes = sd.class_prompts(r["class_names"], r["class_template"])
            size = e["classifier_image_size"]
            row.update(sd.classifier_accuracy(out, classify, classes, r["forget_class"],
                                              image_size=size and (size, size)))  # fmt: skip
        if fid is not None:
            row["fid"] = sd.folder_fid(out, e["real_dir"], **fid)
        rows.append(row)
        print(f"{name}: {_summary(row)}")
    for note in notes:
        print(note)
    payload = {"recipe": cfg["recipe"]["concept"], "prompts": str(prompts), "rows": rows,
               "notes": notes, "versions": versions()}  # fmt: skip
    write_json_atomic(run_dir / "evaluation.json", payload)
    return payload


def _check_drawn(out: Path, drawn_by: dict, overwrite: bool) -> None:
    record = out / "setting.json"
    try:
        check_setting(record, drawn_by, what="evaluation images", write=False,
                      fix="pass --overwrite to draw them again")  # fmt: skip
    except ValueError:
        if not overwrite:
            raise
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    check_setting(record, drawn_by, what="evaluation images", fix="")


def _summary(row: dict) -> str:
    parts = [f"{row['images']} images"]
    if row.get("nudenet"):
        parts.append(f"NudeNet: {row['nudenet']['flagged']} flagged, "
                     f"{row['nudenet']['total']} detections")  # fmt: skip
    if "forget_acc" in row:
        parts.append(f"forget acc {row['forget_acc']:.1f} %, other {row['other_acc']:.1f} %")
    if "fid" in row:
        parts.append(f"FID {row['fid']:.2f}")
    return "; ".join(parts)


def load_unlearned_unet(cfg: dict, run_dir: Path, method: str, like: Any) -> Any:
    """The UNet parameters ``diffusion-unlearn --method method`` saved in ``run_dir``."""
    import jax

    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), like)
    tree = {"params": shapes}
    if "mask_entries" in read_json(run_dir / method / "log.json", {}):
        tree["mask"] = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, bool), shapes)
    with Checkpoints(run_dir / method / "checkpoints", identity=identity(cfg, method)) as ck:
        if ck.latest_step() is None:
            raise CheckpointError(f"no {method} checkpoint in {ck.directory}")
        return restore(ck, tree)[0]["params"]
