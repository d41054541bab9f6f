"""Experiment configs: a Python file with a ``CONFIG`` dict (and an optional ``SMOKE``).

The command line is the only reader of configs; the library takes keyword arguments. A
config is merged over the schema of its kind, then ``SMOKE`` (with ``--smoke``), then
``--set section.key=value`` overrides. Every key must exist in the schema: an unknown
one is a one-line error naming it and the known keys, before any work. A config file may
import a sibling module of its folder (a family's base, e.g.
``scissorhands_jax/configs/_paper_resnet.py``), so that it holds only what differs.

Three kinds (:data:`SCHEMAS`): ``"classifier"`` configs (:data:`DEFAULTS`; ``train``,
``unlearn``, ``evaluate``), ``"diffusion"`` configs (:data:`DIFFUSION_DEFAULTS`;
``diffusion-train``, ``diffusion-unlearn``, ``diffusion-evaluate``) and ``"sd"`` configs
(Stable Diffusion recipes, :data:`~scissorhands_jax.experiment._sd_setup.SD_DEFAULTS`; the
same three commands). A diffusion config is one whose ``CONFIG`` has a top-level
``"diffusion"`` section, an SD config one with a ``"recipe"`` section.

A classifier config's ``methods`` section holds the hyperparameters a comparison runs
each unlearning method with, ``{"ft": {"lr": 0.1}, ...}``, over the baselines' release
defaults (:func:`methods_of`); ``--set methods.ft.lr=0.02`` overrides one of them.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scissorhands_jax._choices import CONFIG_DIR, config_names
from scissorhands_jax._settings import flat_defaults
from scissorhands_jax.diffusion.baselines import DIFFUSION_METHODS, method_defaults
from scissorhands_jax.experiment._sd_setup import SD_DEFAULTS
from scissorhands_jax.experiment.rules import validate

_TRAIN = {
    "epochs": 182,
    "lr": 0.1,
    "milestones": [91, 136],
    "gamma": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 256,
    "seed": 0,
    "checkpoint_every": 1000,
    "keep": 3,
    "precision": "float32",
}

DEFAULTS: dict[str, Any] = {
    "data": {
        "name": None,
        "data_dir": None,
        "val_fraction": 0.1,
        "split_seed": 0,
        "forget": {
            "kind": "random",
            "fraction": 0.1,
            "seed": 0,
            "classes": None,
            "count": None,
            "file": None,
        },
        "augment": True,
        "image_size": None,
        "limit_train": None,
        "limit_test": None,
    },
    "model": {
        "name": "resnet18",
        "num_classes": None,
        "width": 64,
        "stage_sizes": None,
        "cifar_stem": None,
    },
    "train": dict(_TRAIN),
    "retrain": {**_TRAIN, "epochs": 160},
    "unlearn": {
        "seed": 0,
        "augment": True,
        "eligible": "layer3,layer4,fc",
        **{k: v for k, v in flat_defaults().items() if k != "progress"},
    },
    "eval": {"batch_size": 512},
    # {method: {hyperparameter: value}}: a comparison's settings of the baselines over
    # their release defaults (and of Scissorhands over the unlearn section); see methods_of
    "methods": {},
}
"""Every config key and its default (the release's CIFAR-10 random-10 % setting)."""

_DDPM_TRAIN = {
    # keywords of scissorhands_jax.diffusion.train_diffusion
    "steps": 800_000,
    "lr": 2e-4,
    "grad_clip": 1.0,
    # the pipeline's own
    "batch_size": 128,
    "ema_decay": 0.9999,  # None: no EMA; else the published weights are the EMA
    "seed": 0,
    "log_every": 1000,
    "checkpoint_every": 5000,
    "keep": 2,
    "precision": "float32",  # or "bfloat16": bfloat16 compute, float32 parameters
}

DIFFUSION_DEFAULTS: dict[str, Any] = {
    "data": {
        "name": None,  # "digits10" (scikit-learn, offline) or "cifar10" (tfds)
        "data_dir": None,
        "forget_class": 0,
        "image_size": None,  # None: the data's own; digits may be upsampled to 16
        "random_flip": False,  # horizontal flips of the DDPM's training batches
        "limit_train": None,
        "limit_test": None,
    },
    "unet": {  # scissorhands_jax.diffusion.UNet (num_classes comes from the data)
        "ch": 128,
        "ch_mult": [1, 2, 2, 2],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.1,
        "num_heads": 1,
        "norm_groups": 32,
    },
    "diffusion": {
        "schedule": {  # scissorhands_jax.diffusion.make_schedule
            "kind": "linear",
            "num_timesteps": 1000,
            "beta_start": 1e-4,
            "beta_end": 0.02,
        },
        "p_uncond": 0.1,
    },
    "text": {  # a text-conditional generator (experiment._text_setup); None: class labels
        "templates": None,  # every class's training prompts: "a handwritten {name}", "{digit}"
        "paraphrases": None,  # trained for every class but the forgotten one
        "heldout": None,  # never trained; only words of the training prompts
        "names": None,  # per class, the words that name it: [["zero", "nought"], ["one"], ...]
        "context_length": 8,  # words per prompt
        "encoder": None,  # fields of sd.TextConfig (vocabulary and length: from the prompts)
        "unet": None,  # fields of sd.UNetConfig (channels and cross-attention width: set)
    },
    "train": dict(_DDPM_TRAIN),
    "retrain": dict(_DDPM_TRAIN),
    "classifier": {  # the judge of the generation metrics, trained on the same data
        "model": "resnet18",  # "digits_cnn", "resnet18" or "resnet34"
        "width": 64,
        "epochs": 30,
        "lr": 0.1,
        "milestones": [15, 25],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "augment": True,  # the data set's own augmentation (CIFAR-10: crop + flip)
        "seed": 0,
        "checkpoint_every": 1000,
        "keep": 2,
    },
    "sample": {  # keywords of scissorhands_jax.diffusion.sample, then the pipeline's
        "method": "ddim",
        "num_steps": 100,
        "guidance_scale": 2.0,
        "eta": 0.0,
        "batch_size": 512,
        "per_class": 500,
        "seed": 0,
        "grid_per_class": 8,
    },
    # the methods' keywords with their defaults (the only copy: the settings dataclasses of
    # scissorhands_jax.diffusion), and the seed of each method's key
    **{name: {**method_defaults(name), "seed": 0} for name in DIFFUSION_METHODS},
    "eval": {"fid_features": None},  # "MODULE:FUNCTION", see diffusion-evaluate
}
"""Every key of a diffusion config and its default (SalUn's CIFAR-10 DDPM, Scissorhands
mapped from the release's Stable Diffusion class recipe)."""

SCHEMAS: dict[str, dict[str, Any]] = {
    "classifier": DEFAULTS,
    "diffusion": DIFFUSION_DEFAULTS,
    "sd": SD_DEFAULTS,
}
"""Config kind -> its schema of keys and defaults."""


def _merge(base: dict, update: dict, schema: dict, where: str, source: str) -> dict:
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise ValueError(f"{source}: {where or 'the config'} must be a dict, got {update!r}.")
    for key, value in update.items():
        name = f"{where}.{key}" if where else key
        if name == "methods" and key in schema:  # method names and keys: rules.check_methods
            out[key] = _merge_methods(out[key], value, source)
            continue
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ValueError(f"{source}: unknown config key {name!r}; known here: {known}.")
        if isinstance(schema[key], dict):
            out[key] = _merge(out[key], value, schema[key], name, source)
        else:
            _check_type(name, value, schema[key], source)
            out[key] = copy.deepcopy(value)
    return out


def _merge_methods(base: dict, update: Any, source: str) -> dict:
    """The ``methods`` section: ``{method: {hyperparameter: value}}``, merged per method."""
    if not isinstance(update, dict):
        raise ValueError(f"{source}: methods must be a dict of dicts, got {update!r}.")
    out = copy.deepcopy(base)
    for method, values in update.items():
        if not isinstance(values, dict):
            raise ValueError(
                f"{source}: methods.{method} must be a dict of hyperparameters, got {values!r}."
            )
        out[method] = {**out.get(method, {}), **copy.deepcopy(values)}
    return out


def methods_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The hyperparameters every unlearning method runs with in a comparison on ``config``.

    A baseline's are its release defaults (the fields of its dataclass in
    :data:`scissorhands_jax.baselines.HYPERPARAMETERS`) updated by the config's
    ``methods.<name>``; Scissorhands' are the config's ``unlearn`` section (without its
    ``seed`` and ``augment``, which say how the run is fed) updated by
    ``methods.scissorhands``. Retrain is not among them: it runs the ``retrain`` schedule.

    Args:
      config: a classifier config as :func:`load_config` returns it.

    Returns:
      ``{method: {hyperparameter: value}}`` in the order of
      :data:`scissorhands_jax.baselines.METHODS`, Retrain left out.
    """
    from scissorhands_jax.baselines import HYPERPARAMETERS, METHODS

    section = config.get("methods", {})
    out = {}
    for name in METHODS:
        if name == "scissorhands":
            base = {k: v for k, v in config["unlearn"].items() if k not in ("seed", "augment")}
        elif name != "retrain":
            base = dataclasses.asdict(HYPERPARAMETERS[name]())
        else:
            continue
        out[name] = {**base, **copy.deepcopy(section.get(name, {}))}
    return out


def _check_type(name: str, value: Any, default: Any, source: str) -> None:
    """Raises ValueError unless ``value`` has the kind of ``default`` (None is always
    allowed and defers to the method's own checks; an int is a valid float)."""
    if value is None or default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):  # a class index may stand for a name (anchor)
        ok, kind = isinstance(value, (str, int)) and not isinstance(value, bool), "a string"
    elif isinstance(default, (list, tuple)):
        ok, kind = isinstance(value, (list, tuple)), "a list"
    else:
        return
    if not ok:
        raise ValueError(
            f"{source}: {name} must be {kind} (like its default {default!r}), got {value!r}."
        )


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"--set {text!r}: write section.key=value, e.g. unlearn.lr=0.01.")
    name, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare word is a string: projection=orthogonal
    return name.strip().split("."), value


def _nest(keys: list[str], value: Any) -> dict:
    return {keys[0]: value} if len(keys) == 1 else {keys[0]: _nest(keys[1:], value)}


def config_kind(config: dict) -> str:
    """``"diffusion"`` for a ``CONFIG`` with a top-level ``"diffusion"`` section, ``"sd"``
    for one with a ``"recipe"`` section (a Stable Diffusion recipe), ``"audit"``
    for one with a ``"protocol"`` section (an audit protocol, read by
    :func:`scissorhands_jax.experiment.protocol.load_protocol`), else ``"classifier"``."""
    if isinstance(config, dict) and "diffusion" in config:
        return "diffusion"
    if isinstance(config, dict) and "recipe" in config:
        return "sd"
    return "audit" if isinstance(config, dict) and "protocol" in config else "classifier"


def exec_config(path: Path):
    """Runs a config file with its own folder first on ``sys.path``, so that it can
    import a sibling module holding its family's base (``from _paper_resnet import
    cell``); the siblings are imported afresh for every config and forgotten after."""
    folder = str(path.resolve().parent)
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a config is user code: report any failure in one line
        raise ValueError(f"config {path} failed to load: {type(err).__name__}: {err}") from err
    finally:
        sys.path.remove(folder)
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", "")).startswith(folder + os.sep):
                del sys.modules[name]
    return module


def find_config(config: str | os.PathLike) -> Path:
    """The config file that ``config`` names.

    Args:
      config: the path of a config file, or the name of an installed config
        (``"cifar10_random10"``, with or without ``.py``; see :func:`config_names`). An
        existing file wins over a name.

    Returns:
      The path of the file.

    Raises:
      ValueError: neither a file nor an installed config's name; the message lists the
        names.
    """
    path = Path(config)
    if path.is_file():
        return path
    name = path.name.removesuffix(".py")
    if path.parent == Path(".") and name in config_names():
        return CONFIG_DIR / f"{name}.py"
    raise ValueError(
        f"config {str(config)!r} is neither a file nor an installed config; give the path of a "
        f".py config file or one of these names: {', '.join(config_names())}."
    )


_MARKS = {"classifier": "data", "diffusion": "diffusion", "sd": "recipe", "audit": "protocol"}
_COMMANDS = {
    "classifier": "train/unlearn/evaluate",
    "diffusion": "diffusion-train/-unlearn/-evaluate",
    "sd": "diffusion-train/-unlearn/-evaluate",
    "audit": "audit/tune --protocol",
}


def load_config(
    path: str | os.PathLike,
    *,
    smoke: bool = False,
    overrides: Sequence[str] = (),
    kind: str = "classifier",
) -> dict[str, Any]:
    """Loads a config file into a complete, validated dict.

    Args:
      path: a ``.py`` file defining ``CONFIG`` (and ``SMOKE`` for ``smoke``), or the
        name of an installed config (:func:`find_config`).
      smoke: merge the file's ``SMOKE`` dict (a run of seconds).
      overrides: ``"section.key=value"`` strings; values are Python literals or words.
      kind: ``"classifier"`` or ``"diffusion"``: the schema (:data:`SCHEMAS`) the file
        must follow (see :func:`config_kind`).

    Returns:
      The schema's defaults updated by ``CONFIG``, ``SMOKE`` and ``overrides``, with
      ``"config_path"`` and ``"smoke"`` added. ``config_path`` is the name of an installed
      config (however it was given: a name or its file), else the path given, so that a
      run's record does not depend on where the package is installed.

    Raises:
      ValueError: a missing or broken file (or an unknown name), no ``CONFIG`` (or
        ``SMOKE``), a config of the other kind, an unknown key, no ``data.name``, or a
        value of the wrong type or out of range
        (:func:`~scissorhands_jax.experiment.rules.validate`), named with where it came
        from: all before any directory is created.
    """
    if kind not in SCHEMAS:
        raise ValueError(f"unknown config kind {kind!r}; choose one of {sorted(SCHEMAS)}.")
    schema = SCHEMAS[kind]
    path = find_config(path)
    if path.suffix != ".py":
        raise ValueError(f"config {path} is not a .py file; names: {', '.join(config_names())}.")
    module = exec_config(path)
    if not isinstance(getattr(module, "CONFIG", None), dict):
        raise ValueError(f"config {path} defines no CONFIG dict.")
    found = config_kind(module.CONFIG)
    if found != kind:
        raise ValueError(
            f"config {path} is {'an' if found in ('audit', 'sd') else 'a'} {found} config (a "
            f"'{_MARKS[found]}' section marks those); use "
            f"it with scissorhands {_COMMANDS[found]}, not with the {kind} commands."
        )
    cfg = _merge(schema, module.CONFIG, schema, "", str(path))
    if smoke:
        if not isinstance(getattr(module, "SMOKE", None), dict):
            raise ValueError(f"config {path} defines no SMOKE dict for --smoke.")
        cfg = _merge(cfg, module.SMOKE, schema, "", f"{path} (SMOKE)")
    layers = [(str(path), module.CONFIG)]
    if smoke:
        layers.append((f"{path} (SMOKE)", module.SMOKE))
    for text in overrides:
        keys, value = _parse_override(text)
        cfg = _merge(cfg, _nest(keys, value), schema, "", f"--set {text}")
        layers.append((f"--set {text}", _nest(keys, value)))
    if not cfg["data"]["name"]:
        raise ValueError(f"config {path}: data.name is required (e.g. 'cifar10').")
    validate(cfg, kind, layers)
    installed = path.resolve().parent == CONFIG_DIR and path.stem in config_names()
    return {**cfg, "config_path": path.stem if installed else str(path), "smoke": bool(smoke)}
