"""The type and range of every config key, checked once when a config is loaded.

:func:`validate` runs on the merged config (defaults, ``CONFIG``, ``SMOKE``, ``--set``)
before any command creates a directory, and names the first bad value, what it must be,
and where it came from (the file, its ``SMOKE`` or the ``--set`` item). Every key of
both schemas has a rule here (a test checks it), so a new key cannot go unchecked. The
method's own settings (the ``unlearn`` section) are also built into the settings
dataclasses of :mod:`scissorhands_jax._settings`, whose checks are the library's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from scissorhands_jax._choices import SEED_LIMIT
from scissorhands_jax._precision import PRECISIONS
from scissorhands_jax._settings import PROJECTIONS, REINITS, from_flat


class Rule(NamedTuple):
    """What a value must be: ``ok(value)``, described by ``text``; None always passes
    when ``optional``."""

    ok: Callable[[Any], bool]
    text: str
    optional: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(low: int) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= low, f"an integer >= {low}")


def _real(low: float | None = None, high: float | None = None, *, open_: str = "") -> Rule:
    """A finite number in ``[low, high]``; ``open_`` holds ``"l"`` / ``"h"`` for open ends."""

    def ok(v):
        if not _is_real(v):
            return False
        if low is not None and (v <= low if "l" in open_ else v < low):
            return False
        return high is None or (v < high if "h" in open_ else v <= high)

    if low is None and high is None:
        return Rule(ok, "a finite number")
    if high is None:
        return Rule(ok, f"a finite number {'>' if 'l' in open_ else '>='} {low}")
    left, right = "(" if "l" in open_ else "[", ")" if "h" in open_ else "]"
    return Rule(ok, f"a number in {left}{low}, {high}{right}")


def _optional(rule: Rule) -> Rule:
    return Rule(rule.ok, f"{rule.text} or None", True)


def _ints(low: int) -> Rule:
    return Rule(
        lambda v: isinstance(v, list | tuple) and all(_is_int(x) and x >= low for x in v),
        f"a list of integers >= {low}",
    )


def _compiles(v: Any) -> bool:
    try:
        re.compile(v)
    except (re.error, TypeError):
        return False
    return True


def _choice(names: Sequence[str]) -> Rule:
    return Rule(lambda v: v in names, "one of " + ", ".join(map(repr, names)))


CLASSIFIERS = ("digits_cnn", "resnet18", "resnet34")
"""``model.name`` (and the diffusion judge's ``classifier.model``): the networks of
:data:`scissorhands_jax.experiment.pipeline.MODELS` (a test checks they agree)."""
FORGET_KINDS = ("random", "class", "identity", "file")
"""``data.forget.kind``: :data:`scissorhands_jax.data.splits.FORGET_KINDS`."""
BETA_SCHEDULES = ("linear", "cosine", "scaled_linear")
"""``diffusion.schedule.kind``: :data:`scissorhands_jax.diffusion.schedule.BETA_SCHEDULES`."""
SAMPLERS = ("ddpm", "ddim")
"""``sample.method``: :data:`scissorhands_jax.diffusion.sampler.SAMPLERS`."""
OBJECTIVES = ("contrast", "anchor")
"""``scissorhands.objective``: :data:`scissorhands_jax.diffusion.unlearn.OBJECTIVES`."""
ESD_VARIANTS = ("x", "u")
"""``esd.variant`` of an SD config: :data:`scissorhands_jax.sd.ESD_VARIANTS`."""
ESD_X_T = ("ddim", "noised")
"""``esd.x_t`` of an SD config: :data:`scissorhands_jax.sd.ESD_X_T`."""

BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
REGEX = Rule(lambda v: isinstance(v, str) and _compiles(v), "a preset name or a valid regex")
PRECISION = Rule(lambda v: v in PRECISIONS, "one of " + ", ".join(map(repr, PRECISIONS)))
SEED = Rule(lambda v: _is_int(v) and 0 <= v < SEED_LIMIT, "an integer in [0, 2**31)")
COUNT = _int(1)
TEXTS = Rule(
    lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) and x.strip() for x in v),
    "a list of non-empty strings",
)
FIELDS = Rule(lambda v: isinstance(v, dict), "a dict of settings")
POSITIVE = _real(0, open_="l")
NON_NEGATIVE = _real(0)
CLASSES = Rule(
    lambda v: (_is_int(v) and v >= 0) or _ints(0).ok(v), "a class index or a list of them", True
)
ANCHOR = Rule(
    lambda v: (_is_int(v) and v >= 0) or v in ("next", "random"),
    "a class index, 'next' or 'random'",
    True,
)

_SGD = {
    "epochs": COUNT,
    "lr": POSITIVE,
    "milestones": _ints(0),
    "gamma": POSITIVE,
    "momentum": _real(0, 1, open_="h"),
    "weight_decay": NON_NEGATIVE,
    "batch_size": COUNT,
    "seed": SEED,
    "checkpoint_every": _int(0),
    "keep": COUNT,
    "precision": PRECISION,
}
_LIMITS = {"image_size": _optional(COUNT), "limit_train": _optional(COUNT)}
_LIMITS["limit_test"] = _optional(COUNT)

CLASSIFIER_RULES: dict[str, Any] = {
    "data": {
        "name": _optional(TEXT),
        "data_dir": _optional(TEXT),
        "val_fraction": _real(0, 1, open_="h"),
        "split_seed": SEED,
        "forget": {
            "kind": _choice(FORGET_KINDS),
            "fraction": _optional(_real(0, 1, open_="lh")),
            "seed": SEED,
            "classes": CLASSES,
            "count": _optional(COUNT),
            "file": _optional(TEXT),
        },
        "augment": BOOL,
        **_LIMITS,
    },
    "model": {
        "name": _choice(CLASSIFIERS),
        "num_classes": _optional(_int(2)),
        "width": COUNT,
        "stage_sizes": _optional(_ints(1)),
        "cifar_stem": _optional(BOOL),
    },
    "train": _SGD,
    "retrain": _SGD,
    "unlearn": {"seed": SEED, "augment": BOOL, "eligible": _optional(REGEX)},
    "eval": {"batch_size": COUNT},
}
"""Rules of the classifier schema; the other ``unlearn`` keys are the method's settings,
checked by :func:`scissorhands_jax._settings.from_flat`, and the ``methods`` section's by
:func:`check_methods`."""

_DDPM = {
    "steps": COUNT,
    "lr": POSITIVE,
    "grad_clip": _optional(POSITIVE),
    "batch_size": COUNT,
    "ema_decay": _optional(_real(0, 1, open_="h")),
    "seed": SEED,
    "log_every": _int(0),
    "checkpoint_every": _int(0),
    "keep": COUNT,
    "precision": PRECISION,
}
_REPAIR = {"lr": POSITIVE, "steps": COUNT, "batch_size": COUNT}
_REPAIR |= {"grad_clip": _optional(POSITIVE), "seed": SEED}
_SHS = {
    "eligible": TEXT,
    "sparsity": _real(0, 1, open_="lh"),
    "prune_num": COUNT,
    "saliency_guidance": _optional(_real()),
    "reinit": _choice(REINITS),
    "objective": _choice(OBJECTIVES),
    "anchor": ANCHOR,
    "lam": _real(),
    "trainable": _optional(REGEX),
    "projection": _choice(PROJECTIONS),
    "margin": _real(),
    "eps": NON_NEGATIVE,
    "memory_num": COUNT,
    "memory_every": COUNT,
    "log_every": _int(0),
    **_REPAIR,
}

DIFFUSION_RULES: dict[str, Any] = {
    "data": {
        "name": _optional(TEXT),
        "data_dir": _optional(TEXT),
        "forget_class": _int(0),
        "random_flip": BOOL,
        **_LIMITS,
    },
    "unet": {
        "ch": COUNT,
        "ch_mult": Rule(lambda v: bool(v) and _ints(1).ok(v), "a non-empty list of integers >= 1"),
        "num_res_blocks": _int(0),
        "attn_resolutions": _ints(1),
        "dropout": _real(0, 1, open_="h"),
        "num_heads": COUNT,
        "norm_groups": COUNT,
    },
    "diffusion": {
        "schedule": {
            "kind": _choice(BETA_SCHEDULES),
            "num_timesteps": COUNT,
            "beta_start": _real(0, 1, open_="lh"),
            "beta_end": _real(0, 1, open_="lh"),
        },
        "p_uncond": _real(0, 1),
    },
    "text": {
        "templates": _optional(TEXTS),
        "paraphrases": _optional(TEXTS),
        "heldout": _optional(TEXTS),
        "names": _optional(Rule(lambda v: isinstance(v, list | tuple), "a list per class")),
        "context_length": COUNT,
        "encoder": _optional(FIELDS),
        "unet": _optional(FIELDS),
    },
    "train": _DDPM,
    "retrain": _DDPM,
    "classifier": {**_SGD, "model": _choice(CLASSIFIERS), "width": COUNT, "augment": BOOL},
    "sample": {
        "method": _choice(SAMPLERS),
        "num_steps": COUNT,
        "guidance_scale": _real(),
        "eta": NON_NEGATIVE,
        "batch_size": _optional(COUNT),
        "per_class": COUNT,
        "seed": SEED,
        "grid_per_class": COUNT,
    },
    "scissorhands": _SHS,
    "scissorhands_anchor": _SHS,
    "salun": {
        "mask_ratio": _real(0, 1, open_="l"),
        "saliency_guidance": _optional(_real()),
        "mask_batches": COUNT,
        "anchor": ANCHOR,
        "alpha": NON_NEGATIVE,
        "log_every": _int(0),
        **_REPAIR,
    },
    "finetune": _REPAIR,
    "eval": {"fid_features": _optional(TEXT)},
}
"""Rules of the diffusion schema (every section checked here, also those a command does
not read: ``diffusion-train`` refuses a bad ``scissorhands`` setting before training)."""

_TEXTS = Rule(
    lambda v: isinstance(v, list | tuple) and all(TEXT.ok(x) for x in v),
    "a list of non-empty strings",
)
SD_RULES: dict[str, Any] = {
    "recipe": {
        "concept": _choice(("nudity", "class")),
        "forget_prompts": _TEXTS,
        "anchor_prompt": TEXT,
        "class_names": _TEXTS,
        "class_template": Rule(lambda v: isinstance(v, str) and "{}" in v, "a string with {}"),
        "forget_class": _int(0),
    },
    "model": {"path": _optional(TEXT), "tokenizer": _optional(TEXT), "tiny": BOOL, "seed": SEED},
    "data": {
        "name": _optional(TEXT),
        "data_dir": _optional(TEXT),
        "forget_dir": _optional(TEXT),
        "retain_dir": _optional(TEXT),
        "forget_per_prompt": COUNT,
        "retain_per_prompt": COUNT,
        "image_size": COUNT,
        "seed": SEED,
        "batch_size": COUNT,
    },
    "sample": {
        "sampler": _choice(("ddim", "plms")),
        "num_steps": COUNT,
        "guidance_scale": _real(),
    },
    "scissorhands": {**_SHS, "epochs": _optional(COUNT)},
    "esd": {
        "lr": POSITIVE,
        "iterations": COUNT,
        "batch_size": COUNT,
        "negative_guidance": NON_NEGATIVE,
        "variant": _choice(ESD_VARIANTS),
        "x_t": _choice(ESD_X_T),
        "ddim_steps": COUNT,
        "start_guidance": NON_NEGATIVE,
        "log_every": COUNT,
        "seed": SEED,
    },
    "salun": {
        "lr": POSITIVE,
        "epochs": COUNT,
        "batch_size": COUNT,
        "alpha": NON_NEGATIVE,
        "ratio": _real(0, 1, open_="lh"),
        "pseudo_label": _optional(_int(0)),
        "log_every": COUNT,
        "seed": SEED,
    },
    "eval": {
        "prompts": _optional(TEXT),
        "images_per_prompt": COUNT,
        "seed": SEED,
        "nudenet": BOOL,
        "nudenet_threshold": _real(0, 1, open_="h"),
        "classifier": _optional(TEXT),
        "classifier_image_size": _optional(COUNT),
        "real_dir": _optional(TEXT),
        "inception_weights": _optional(TEXT),
    },
}
"""Rules of the Stable Diffusion recipe schema."""

RULES = {"classifier": CLASSIFIER_RULES, "diffusion": DIFFUSION_RULES, "sd": SD_RULES}
METHOD_SECTION = {"classifier": "unlearn"}
"""The section of each kind whose other keys are the method's settings."""


def _origin(name: str, layers: Sequence[tuple[str, dict]]) -> str:
    """The last layer (``(source, nested dict)``) that set the dotted key ``name``."""
    for source, tree in reversed(layers):
        node: Any = tree
        for key in name.split("."):
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return source
    return "the defaults"


def _walk(cfg: dict, rules: dict, prefix: str = ""):
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        rule = rules.get(key)
        if isinstance(rule, dict):
            yield from _walk(value, rule, f"{name}.")
        else:
            yield name, value, rule


def check_methods(methods: dict, layers: Sequence[tuple[str, dict]] = ()) -> None:
    """Checks a classifier config's ``methods`` section, ``{method: {hyperparameter:
    value}}``: every method one of :data:`scissorhands_jax.baselines.METHODS` but Retrain
    (it runs the ``retrain`` schedule), every hyperparameter a field of the method's
    dataclass in :data:`scissorhands_jax.baselines.HYPERPARAMETERS` in its range
    (Scissorhands: ``eligible`` or a flat setting of :mod:`scissorhands_jax._settings`).

    Raises:
      ValueError: the first bad method, name or value, in one line, with its source.
    """
    from scissorhands_jax.baselines import HYPERPARAMETERS, METHODS

    for method, values in methods.items():
        where = f"methods.{method}"
        if method == "retrain":
            raise ValueError(
                f"{_origin(where, layers)}: {where}: Retrain runs the retrain section's "
                "schedule; set retrain.lr=... (and the other retrain keys) instead."
            )
        if method not in METHODS:
            known = ", ".join(m for m in METHODS if m != "retrain")
            raise ValueError(f"{_origin(where, layers)}: unknown method {where!r}; known: {known}.")
        for key, value in values.items():
            source = _origin(f"{where}.{key}", layers)
            try:
                if method != "scissorhands":
                    HYPERPARAMETERS[method].of(method, {key: value})
                elif key == "eligible":
                    if value is not None and not REGEX.ok(value):
                        raise ValueError(f"eligible must be {REGEX.text}, got {value!r}.")
                else:
                    from_flat(**{key: value})
            except ValueError as err:
                raise ValueError(f"{source}: {where}: {err}") from None
        try:  # the settings together (a check across two of them)
            if method != "scissorhands":
                HYPERPARAMETERS[method].of(method, values)
            else:
                from_flat(**{k: v for k, v in values.items() if k != "eligible"})
        except ValueError as err:
            raise ValueError(f"{_origin(where, layers)}: {where}: {err}") from None


def validate(cfg: dict, kind: str, layers: Sequence[tuple[str, dict]] = ()) -> None:
    """Checks the type and range of every value of a merged config.

    Args:
      cfg: the merged config (schema keys only).
      kind: ``"classifier"`` or ``"diffusion"``.
      layers: ``(source, nested dict)`` in merge order, to name where a bad value came
        from (the config file, its ``SMOKE``, a ``--set`` item).

    Raises:
      ValueError: the first bad value, in one line: its source, key, rule and value.
    """
    rules = RULES[kind]
    method = METHOD_SECTION.get(kind)
    if "methods" in cfg:
        check_methods(cfg["methods"], layers)
        cfg = {k: v for k, v in cfg.items() if k != "methods"}
    for name, value, rule in _walk(cfg, rules):
        section, _, key = name.partition(".")
        if rule is None and section == method:
            try:
                from_flat(**{key: value})
            except ValueError as err:
                raise ValueError(f"{_origin(name, layers)}: {section}.{err}") from err
            continue
        if rule is None:
            raise AssertionError(f"config key {name} has no rule in experiment.rules")
        if value is None and rule.optional:
            continue
        if not rule.ok(value):
            raise ValueError(f"{_origin(name, layers)}: {name} must be {rule.text}, got {value!r}.")
    for section in ("scissorhands", "scissorhands_anchor"):
        if kind == "diffusion" and cfg[section]["objective"] == "anchor":
            if cfg[section]["anchor"] is None:
                raise ValueError(
                    f"{_origin(f'{section}.objective', layers)}: {section}.anchor must be a "
                    f"class index, 'next' or 'random' with {section}.objective='anchor', "
                    "got None."
                )
    if method is not None:
        checked = {k for k in rules[method]}
        flat = {k: v for k, v in cfg[method].items() if k not in checked}
        try:
            from_flat(**flat)
        except ValueError as err:
            raise ValueError(f"the {method} section: {err}") from err
