"""Experiment configs: a Python file with a ``CONFIG`` dict (and an optional ``SMOKE``).

The command line is the only reader of configs; the library takes keyword arguments. A
config is merged over :data:`DEFAULTS`, then ``SMOKE`` (with ``--smoke``), then
``--set section.key=value`` overrides. Every key must exist in :data:`DEFAULTS`: an
unknown one is a one-line error naming it and the known keys, before any work.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
        "batch_size": 256,
        "augment": True,
        "eligible": "layer3,layer4,fc",
        "sparsity": 0.97,
        "lr": 5e-3,
        "epochs": 10,
        "lam": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "prune_num": 1,
        "memory_num": 1,
        "margin": 0.5,
        "eps": 1e-3,
        "projection": "gem",
        "project_every": 1,
        "reinit": "model",
        "release_memory": False,
        "saliency_train_mode": False,
    },
    "eval": {"batch_size": 512},
}
"""Every config key and its default (the release's CIFAR-10 random-10 % setting)."""


def _merge(base: dict, update: dict, schema: dict, where: str, source: str) -> dict:
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise ValueError(f"{source}: {where or 'the config'} must be a dict, got {update!r}.")
    for key, value in update.items():
        name = f"{where}.{key}" if where else key
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ValueError(f"{source}: unknown config key {name!r}; known here: {known}.")
        if isinstance(schema[key], dict):
            out[key] = _merge(out[key], value, schema[key], name, source)
        else:
            out[key] = copy.deepcopy(value)
    return out


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


def load_config(
    path: str | os.PathLike, *, smoke: bool = False, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Loads a config file into a complete, validated dict.

    Args:
      path: a ``.py`` file defining ``CONFIG`` (and ``SMOKE`` for ``smoke``).
      smoke: merge the file's ``SMOKE`` dict (a run of seconds).
      overrides: ``"section.key=value"`` strings; values are Python literals or words.

    Returns:
      :data:`DEFAULTS` updated by ``CONFIG``, ``SMOKE`` and ``overrides``, with
      ``"config_path"`` and ``"smoke"`` added.

    Raises:
      ValueError: a missing or broken file, no ``CONFIG`` (or ``SMOKE``), an unknown
        key, or no ``data.name``.
    """
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise ValueError(f"config {path} is not a .py file (see experiments/configs/).")
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a config is user code: report any failure in one line
        raise ValueError(f"config {path} failed to load: {type(err).__name__}: {err}") from err
    if not isinstance(getattr(module, "CONFIG", None), dict):
        raise ValueError(f"config {path} defines no CONFIG dict.")
    cfg = _merge(DEFAULTS, module.CONFIG, DEFAULTS, "", str(path))
    if smoke:
        if not isinstance(getattr(module, "SMOKE", None), dict):
            raise ValueError(f"config {path} defines no SMOKE dict for --smoke.")
        cfg = _merge(cfg, module.SMOKE, DEFAULTS, "", f"{path} (SMOKE)")
    for text in overrides:
        keys, value = _parse_override(text)
        cfg = _merge(cfg, _nest(keys, value), DEFAULTS, "", f"--set {text}")
    if not cfg["data"]["name"]:
        raise ValueError(f"config {path}: data.name is required (e.g. 'cifar10').")
    return {**cfg, "config_path": str(path), "smoke": bool(smoke)}
