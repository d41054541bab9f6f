"""What the Stable Diffusion recipe's steps share: the config schema, the model, the
prompts, the run files and the methods.

An SD config is marked by its ``recipe`` section
(:func:`~scissorhands_jax.experiment.config.config_kind`) and runs through the same
commands as the DDPM configs. Its run directory holds::

    run.json                        the request: recipe, model, prompts, image counts
    data/forget/, data/retain/      generated training images and their index.csv
    data/latents.npz                their latents, condition labels and the prompts
    <method>/checkpoints/ log.json  an unlearned UNet (and its re-initialisation mask)
    eval/<model>/                   evaluation images (index.csv), per model
    evaluation.json                 the hooks' numbers per model
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from scissorhands_jax.diffusion.baselines import method_defaults, scissorhands_diffusion_from_names
from scissorhands_jax.sd import (
    ANCHOR_PROMPT,
    CLASS_PROMPT,
    CLASS_RECIPE,
    IMAGENETTE_CLASSES,
    NUDENET_THRESHOLD,
    RECIPE_EPOCHS,
    ESDHyperparameters,
    SalunSDHyperparameters,
    esd_unlearn,
    recipe_prompts,
    salun_unlearn,
)

SD_DEFAULTS: dict[str, Any] = {
    "recipe": {
        "concept": "class",  # or "nudity"
        "forget_prompts": [],  # nudity: the prompts of the forget images
        "anchor_prompt": ANCHOR_PROMPT,  # nudity: the retained concept, the repair's anchor
        "class_names": list(IMAGENETTE_CLASSES),  # class: one prompt each, in class order
        "class_template": CLASS_PROMPT,
        "forget_class": 0,
    },
    "model": {
        "path": None,  # a diffusers folder, or a CompVis .ckpt / .safetensors file
        "tokenizer": None,  # a tokenizer/ folder; needed with a single file
        "tiny": False,  # a random SD-shaped toy model instead (tests, smoke runs)
        "seed": 0,  # of the toy model's parameters
    },
    "data": {
        "name": None,
        "data_dir": None,  # unused: the images are generated or given as folders
        "forget_dir": None,  # a folder of forget images (index.csv or one prompt): no sampling
        "retain_dir": None,  # likewise for the retain images
        "forget_per_prompt": 100,  # images generated per forget prompt
        "retain_per_prompt": 100,  # images generated per retain prompt
        "image_size": 512,
        "seed": 0,
        "batch_size": 8,  # images per sampling and encoding call
    },
    "sample": {  # keywords of scissorhands_jax.sd.generate_eval_set
        "sampler": "ddim",
        "num_steps": 50,
        "guidance_scale": 7.5,
    },
    # epochs (None: steps) over the retain set; the seed of the method's key
    "scissorhands": {
        **method_defaults("scissorhands"),
        **CLASS_RECIPE,
        "seed": 0,
        "epochs": RECIPE_EPOCHS["class"],
    },
    # ESD (iterations of batches of forget prompts, x_t from the UNet's own DDIM) and
    # SalUn (epochs over the forget latents, a retain batch per step); the papers' defaults
    "esd": {**dataclasses.asdict(ESDHyperparameters()), "log_every": 100, "seed": 0},
    "salun": {
        **dataclasses.asdict(SalunSDHyperparameters()),
        "pseudo_label": None,  # c': None a random other class; nudity: the anchor's label 0
        "log_every": 100,
        "seed": 0,
    },
    "eval": {
        "prompts": None,  # a prompt file (I2P csv); None: the class prompts (class recipe)
        "images_per_prompt": 1,
        "seed": 0,
        "nudenet": True,  # count NudeNet detections where the package is installed
        "nudenet_threshold": NUDENET_THRESHOLD,
        "classifier": None,  # "MODULE:FUNCTION": classify(uint8 images) -> logits or labels
        "classifier_image_size": None,  # resize the images for it first
        "real_dir": None,  # real images for FID
        "inception_weights": None,  # the FID Inception .npz
    },
}
"""Every key of an SD recipe config and its default (the release's class recipe)."""

PIPELINE_KEYS = ("seed", "epochs")
"""Keys of a method section read by the pipeline, not passed to the method (``epochs``
only for the methods of :data:`STEPS_FROM_EPOCHS`)."""
STEPS_FROM_EPOCHS = ("scissorhands",)
"""The methods whose section's ``epochs`` the pipeline turns into ``steps`` over the
retain set; ESD counts its ``iterations``, SalUn its own ``epochs`` over the forget set."""

SD_METHODS: dict[str, Any] = {
    "scissorhands": scissorhands_diffusion_from_names,
    "esd": esd_unlearn,
    "salun": salun_unlearn,
}
"""Method name (``diffusion-unlearn --method`` and the config section of its settings)
-> the function: ``method(model, params, *, retain, forget, key, progress, **settings)``
where ``model`` is :func:`~scissorhands_jax.sd.prompt_conditioned_model` and the settings
are the section's keys but the pipeline's (:data:`PIPELINE_KEYS`); the same call as
:data:`~scissorhands_jax.diffusion.DIFFUSION_METHODS`."""


def prompts_of(cfg: dict) -> tuple[list[str], list[int], list[int]]:
    """``(prompts, forget_labels, retain_labels)`` of the config's recipe."""
    r = cfg["recipe"]
    return recipe_prompts(
        r["concept"],
        forget_prompts=list(r["forget_prompts"]),
        anchor_prompt=r["anchor_prompt"],
        class_names=list(r["class_names"]),
        template=r["class_template"],
        forget_class=r["forget_class"],
    )


def model_identity(cfg: dict) -> str:
    """What the loaded weights are: ``tiny:<seed>`` or the resolved path."""
    m = cfg["model"]
    return f"tiny:{m['seed']}" if m["tiny"] else str(Path(m["path"]).resolve())


def check_model_setting(cfg: dict) -> None:
    """Refuses a config without weights, before anything is written.

    Raises:
      ValueError: neither ``model.path`` nor ``model.tiny``; a path that does not exist;
        a single file without ``model.tokenizer``.
    """
    m = cfg["model"]
    if m["tiny"]:
        return
    if not m["path"]:
        raise ValueError(
            f"config {cfg['config_path']}: model.path is not set; give your SD v1.4 weights "
            "with --set model.path=DIR (a diffusers folder) or =FILE (a CompVis .ckpt or "
            ".safetensors; add --set model.tokenizer=DIR/tokenizer), or --set model.tiny=True "
            "for a random toy model."
        )
    path = Path(m["path"])
    if not path.exists():
        raise ValueError(f"model.path {str(path)!r} does not exist; give your SD weights.")
    if path.is_file() and not m["tokenizer"]:
        raise ValueError(
            f"model.path {str(path)!r} is a single-file checkpoint, which holds no tokenizer; "
            "give one with --set model.tokenizer=DIR (a tokenizer/ folder with vocab.json "
            "and merges.txt)."
        )


def load_sd(cfg: dict):
    """``(StableDiffusion, SchedulerConfig)`` of the config's ``model`` section."""
    check_model_setting(cfg)
    m = cfg["model"]
    return _load(bool(m["tiny"]), int(m["seed"]), m["path"], m["tokenizer"])


# One set of weights is kept: a process that runs several commands on the same model (a
# script calling diffusion-train, -unlearn and -evaluate in turn, or the tests) reads it
# from disk once. Full SD v1.4 weights are gigabytes, so a second model replaces the first
# instead of joining it.
@functools.lru_cache(maxsize=1)
def _load(tiny: bool, seed: int, path: str | None, tokenizer: str | None):
    import jax

    from scissorhands_jax import sd

    if tiny:
        return sd.tiny_stable_diffusion(jax.random.key(seed)), sd.SchedulerConfig()
    folder = Path(path)
    if folder.is_dir():
        model = sd.load_diffusers(folder)
        scheduler_dir = folder / "scheduler"
        scheduler = (
            sd.read_scheduler_config(scheduler_dir)
            if scheduler_dir.is_dir()
            else sd.SchedulerConfig()
        )
    else:
        model = sd.load_compvis(folder)._replace(tokenizer=sd.load_tokenizer(tokenizer))
        scheduler = sd.SchedulerConfig()
    if tokenizer and folder.is_dir():
        model = model._replace(tokenizer=sd.load_tokenizer(tokenizer))
    return model, scheduler


def sample_settings(cfg: dict, scheduler) -> dict[str, Any]:
    """The keywords of :func:`~scissorhands_jax.sd.generate_eval_set` the config sets."""
    size = cfg["data"]["image_size"]
    return {**cfg["sample"], "scheduler": scheduler, "height": size, "width": size}


def method_settings(cfg: dict, method: str) -> dict[str, Any]:
    """The section of ``method`` without the pipeline's keys."""
    skip = PIPELINE_KEYS if method in STEPS_FROM_EPOCHS else ("seed",)
    return {k: v for k, v in cfg[method].items() if k not in skip}


def request(cfg: dict) -> dict[str, Any]:
    """What ``run.json`` records: a run directory holds one request only."""
    prompts, forget, retain = prompts_of(cfg)
    d = cfg["data"]
    return {
        "recipe": cfg["recipe"]["concept"],
        "model": model_identity(cfg),
        "prompts": prompts,
        "forget_labels": forget,
        "retain_labels": retain,
        "forget_dir": d["forget_dir"] and str(Path(d["forget_dir"]).resolve()),
        "retain_dir": d["retain_dir"] and str(Path(d["retain_dir"]).resolve()),
        "forget_per_prompt": d["forget_per_prompt"],
        "retain_per_prompt": d["retain_per_prompt"],
        "image_size": d["image_size"],
        "data_seed": d["seed"],
        "sample": cfg["sample"],
    }


REQUEST_KEYS = tuple(
    (
        "recipe model prompts forget_labels retain_labels forget_dir retain_dir "
        "forget_per_prompt retain_per_prompt image_size data_seed sample"
    ).split()
)
"""The keys of :func:`request` compared when a run directory is reused."""


def identity(cfg: dict, method: str) -> dict[str, Any]:
    """What an unlearned checkpoint depends on (a changed value refuses it)."""
    return {"role": method, "request": request(cfg), "settings": cfg[method]}
