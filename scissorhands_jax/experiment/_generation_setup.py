"""What the generation pipeline's steps share: config -> data, models, run files (the run
directory's layout is in :mod:`scissorhands_jax.experiment.generation`).

Every checkpoint goes through :class:`~scissorhands_jax.Checkpoints` with an identity
(data, network, schedule, settings): a run directory is never continued or read under
another config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._checkpoint import CheckpointError, Checkpoints, check_directory
from scissorhands_jax._loop import TrainState
from scissorhands_jax._objective import adam_tx
from scissorhands_jax.baselines import UnlearnResult
from scissorhands_jax.diffusion.baselines import DIFFUSION_METHODS
from scissorhands_jax.diffusion.data import GenerationData, load_generation_data
from scissorhands_jax.diffusion.metrics import feature_extractor
from scissorhands_jax.diffusion.model import DiffusionModel, diffusion_model
from scissorhands_jax.diffusion.schedule import make_schedule
from scissorhands_jax.experiment.config import load_config
from scissorhands_jax.experiment.pipeline import indices_sha, read_json, restore, sgd_setup
from scissorhands_jax.models import DigitsCNN, Model, ResNet, linen_model

GENERATORS = {"original": ("train", "train"), "retrain": ("retrain", "retain")}
"""Generator role -> (config section of its schedule, data part it trains on)."""
ROLES = (*GENERATORS, "classifier")
PIPELINE_KEYS = {
    "train": (
        "batch_size",
        "ema_decay",
        "seed",
        "log_every",
        "checkpoint_every",
        "keep",
        "precision",
    ),
    "method": ("seed",),
    "sample": ("per_class", "seed", "grid_per_class"),
}
"""Config keys read by the commands themselves; the rest of a section are keywords of
the library function it documents."""
_JUDGES = {"digits_cnn": None, "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def load_generation_config(
    config: str, *, smoke: bool = False, overrides: Sequence[str] = (), data_dir: str | None = None
) -> dict[str, Any]:
    """The diffusion config ``config`` (a name or a file), with its ``SMOKE`` merged when
    ``smoke``, the ``section.key=value`` ``overrides`` and ``data_dir``; checked.

    Raises:
      ValueError: an unknown config or key, a bad value, or a classifier config.
    """
    overrides = list(overrides)
    if data_dir:
        overrides.append(f"data.data_dir={data_dir!r}")
    cfg = load_config(config, smoke=smoke, overrides=overrides, kind="diffusion")
    if is_text(cfg):  # its prompts refused now, before any directory is written
        from scissorhands_jax.experiment._text_setup import check_text

        check_text(cfg)
    return cfg


def is_text(cfg: dict) -> bool:
    """True for a text-conditional generator's config (``text.templates`` set; its
    code, in ``experiment._text_setup``, loads on first use: it needs the ``sd`` extra)."""
    return cfg.get("text", {}).get("templates") is not None


def build_data(cfg: dict, *, progress: bool) -> GenerationData:
    d = cfg["data"]
    data = load_generation_data(
        d["name"],
        forget_class=d["forget_class"],
        image_size=d["image_size"],
        data_dir=d["data_dir"],
        limit_train=d["limit_train"],
        limit_test=d["limit_test"],
        progress=progress,
    )
    if is_text(cfg):  # the generator's labels become prompts
        from scissorhands_jax.experiment._text_setup import text_data

        return text_data(cfg, data)
    return data


def build_model(cfg: dict, data: GenerationData) -> DiffusionModel:
    """The config's DDPM for ``data`` (a text-conditional one for a config with a
    ``text`` section)."""
    if is_text(cfg):
        from scissorhands_jax.experiment._text_setup import text_model

        return text_model(cfg, data)
    from scissorhands_jax.models.unet import UNet

    s = cfg["diffusion"]["schedule"]
    unet = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()}
    sched = make_schedule(
        s["kind"], s["num_timesteps"], beta_start=s["beta_start"], beta_end=s["beta_end"]
    )
    return diffusion_model(
        UNet(num_classes=data.num_classes, **unet),
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        schedule=sched,
        p_uncond=float(cfg["diffusion"]["p_uncond"]),
    )


def build_judge(cfg: dict, data: GenerationData):
    """``(model, features)``: the judge classifier as a :class:`Model`, and
    ``features(params, model_state, x) -> (N, D)`` of its penultimate layer."""
    c = cfg["classifier"]
    if c["model"] not in _JUDGES:
        raise ValueError(
            f"unknown classifier.model {c['model']!r}; choose one of {sorted(_JUDGES)}."
        )
    name, width, num_classes = c["model"], int(c["width"]), data.num_classes
    image_shape = data.dataset.image_shape
    example = jnp.zeros((1, *image_shape), jnp.float32)
    if name == "digits_cnn":
        module = DigitsCNN(num_classes)
        extract = feature_extractor(module, layer="Dense_0", train=False)
    else:
        module = ResNet(_JUDGES[name], num_classes, image_shape[0] <= 64, width)
        pool = lambda h: jnp.mean(h, axis=(1, 2))  # noqa: E731  (ResNet's global pool)
        extract = feature_extractor(module, layer="layer4", activation=pool, train=False)

    def features(params, model_state, x):
        return extract({"params": params, **model_state}, x)

    return linen_model(module, example), features


def generator_tx(section: dict):
    return adam_tx(section["grad_clip"])  # the direction; the run's step scales it by -lr


def classifier_setup(cfg: dict, data: GenerationData, judge: Model, *, abstract: bool = False):
    """``(section, source, tx, fresh_state, data_key)`` of the judge's training."""
    c = cfg["classifier"]
    source = data.classifier_source(c["batch_size"], augment=c["augment"])
    return (c, source, *sgd_setup(c, source, judge, abstract=abstract))  # the classifiers' SGD


def generator_setup(
    cfg: dict, role: str, data: GenerationData, model: DiffusionModel, *, abstract: bool = False
):
    """``(section, source, tx, fresh_state, train_key)`` of the original or the retrain
    oracle: Adam (with clipping) on the ε-loss, the state initialised from
    ``fold_in(key(seed), 0)``, the run keyed by ``fold_in(key(seed), 1)``; with
    ``abstract`` the fresh state's arrays are only shapes (enough to restore)."""
    name, part = GENERATORS[role]
    section = cfg[name]
    source = data.source(part, section["batch_size"], flip=cfg["data"]["random_flip"])
    tx = generator_tx(section)
    key = jax.random.key(section["seed"])
    ema = section["ema_decay"] is not None

    def fresh(k):
        params = model.init(k)[0]
        return params, {}, tx.init(params), params if ema else None

    init_key = jax.random.fold_in(key, 0)
    tree = jax.eval_shape(fresh, init_key) if abstract else fresh(init_key)
    return section, source, tx, TrainState(0, *tree), jax.random.fold_in(key, 1)


def _data_identity(cfg: dict, data: GenerationData) -> dict[str, Any]:
    d = cfg["data"]
    return {
        "name": d["name"],
        "num_train": int(len(data.dataset.train)),
        "labels_sha": indices_sha(data.dataset.train.labels),
        "image_shape": list(data.image_shape),
    }


def _without(section: dict, keys) -> dict:
    return {k: v for k, v in section.items() if k not in keys}


def identity(cfg: dict, role: str, data: GenerationData) -> dict[str, Any]:
    """What a checkpoint of ``role`` depends on (a changed value refuses the checkpoint)."""
    base = {"role": role, "data": _data_identity(cfg, data)}
    if role == "classifier":
        section = _without(cfg["classifier"], ("checkpoint_every", "keep"))
        return {**base, "classifier": section}
    generator = {"unet": cfg["unet"], "diffusion": cfg["diffusion"]}
    if is_text(cfg):
        generator["text"] = cfg["text"]
    if role in GENERATORS:
        name = GENERATORS[role][0]
        schedule = _without(cfg[name], ("checkpoint_every", "keep", "log_every"))
        if schedule.get("precision") == "float32":  # runs saved before the setting
            schedule.pop("precision")
        schedule["random_flip"] = cfg["data"]["random_flip"]
        if role == "retrain":
            base["data"]["forget_class"] = cfg["data"]["forget_class"]
        return {**base, **generator, "schedule": schedule}
    base["data"]["forget_class"] = cfg["data"]["forget_class"]
    original = identity(cfg, "original", data)
    return {**base, "original": original, "settings": cfg[role]}


def checkpoints(run: Path, role: str, cfg: dict, data: GenerationData) -> Checkpoints:
    keep = cfg[GENERATORS[role][0]]["keep"] if role in GENERATORS else 1
    keep = cfg["classifier"]["keep"] if role == "classifier" else keep
    return Checkpoints(run / role / "checkpoints", identity=identity(cfg, role, data), keep=keep)


def committed_steps(run: Path, role: str) -> list[int]:
    """The saved steps of ``role`` (cheap: reads only the directory listing)."""
    return check_directory(run / role / "checkpoints")


def _restore_final(ck: Checkpoints, role: str, like: Any, fix: str) -> Any:
    if ck.latest_step() is None:
        raise CheckpointError(f"no {role} checkpoint in {ck.directory}; run: {fix}")
    tree, info = restore(ck, like)
    if not info.get("final"):
        raise CheckpointError(
            f"the {role} run in {ck.directory} is unfinished (step {ck.latest_step()}); "
            f"finish it with: {fix} --resume"
        )
    return tree


def load_generator(run: Path, role: str, cfg: dict, data: GenerationData, model) -> Any:
    """The published weights (the EMA when kept) of a finished ``original`` or ``retrain``.

    Raises:
      CheckpointError: no checkpoint, an unfinished run, or a mismatched/corrupt one.
    """
    fix = f"scissorhands diffusion-train {cfg['config_path']} --out {run} --only {role}"
    _, _, _, fresh, _ = generator_setup(cfg, role, data, model, abstract=True)
    with checkpoints(run, role, cfg, data) as ck:
        tree = _restore_final(ck, role, fresh.tree(), fix)
    return TrainState(0, tree["params"], {}, None, tree.get("ema")).published


def load_judge(run: Path, cfg: dict, data: GenerationData, judge: Model):
    """``(params, model_state)`` of the finished judge classifier."""
    fix = f"scissorhands diffusion-train {cfg['config_path']} --out {run} --only classifier"
    _, _, _, fresh, _ = classifier_setup(cfg, data, judge, abstract=True)
    with checkpoints(run, "classifier", cfg, data) as ck:
        tree = _restore_final(ck, "classifier", fresh.tree(), fix)
    return tree["params"], tree["model_state"]


def unlearned_like(params: Any, masked: bool) -> dict[str, Any]:
    """The tree an unlearned checkpoint holds: parameters, and the mask when ``masked``."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)
    if not masked:
        return {"params": shapes}
    mask = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, bool), shapes)
    return {"params": shapes, "mask": mask}


def load_unlearned(run: Path, method: str, cfg: dict, data: GenerationData, like: Any):
    """The parameters saved by ``diffusion-unlearn --method method`` (its log says whether
    a mask was saved beside them)."""
    fix = f"scissorhands diffusion-unlearn {cfg['config_path']} --run {run} --method {method}"
    masked = "mask_entries" in read_json(run / method / "log.json", {})
    with checkpoints(run, method, cfg, data) as ck:
        return _restore_final(ck, method, unlearned_like(like, masked), fix)["params"]


def unlearn(
    method: str, model, params, data: GenerationData, settings: dict, *, key, progress: bool
) -> UnlearnResult:
    """Runs ``method`` of :data:`~scissorhands_jax.diffusion.DIFFUSION_METHODS` with its
    config section's keywords (``settings``, without the seed)."""
    retain = data.source("retain", settings["batch_size"])
    forget = data.source("forget", settings["batch_size"])
    return DIFFUSION_METHODS[method](model, params, retain=retain, forget=forget, key=key,
                                     progress=progress, **settings)  # fmt: skip
