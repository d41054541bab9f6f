"""The audit's protocols: config files naming a population, its schedule and each method's
defaults, and the population a protocol draws.

A protocol is a config file, ``scissorhands_jax/configs/audit_<name>.py`` for the
installed ones (:func:`protocol_names`), or any ``.py`` file of the same form::

    CONFIG = {
        "protocol": {  # the population and the originals' and retrains' SGD schedule
            "pool_size": 400, "candidates": 80, "model": "digits_mlp", "epochs": 80,
            "lr": 0.05, "weight_decay": 0.0, "batch_size": 64, "why": "...",
        },
        "methods": {  # what each method runs with unless a tune chose otherwise
            "ft": {"lr": 0.1, "epochs": 10, "batch_size": 64},
            ...
        },
    }

Every ``protocol`` key is required and checked (:data:`PROTOCOL_RULES`); a method's
hyperparameters are checked by the method itself, and a method left out runs with its
release defaults. The protocol's name is the file's stem without ``audit_``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from scissorhands_jax import population as pop
from scissorhands_jax.data import load_digits10
from scissorhands_jax.experiment.config import CONFIG_DIR, exec_config
from scissorhands_jax.experiment.rules import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    REGEX,
    TEXT,
    Rule,
)
from scissorhands_jax.models import DigitsCNN, DigitsMLP, linen_model

DEFAULT_PROTOCOL = "digits_small"
PREFIX = "audit_"
"""Installed protocol ``name`` is the config ``audit_<name>.py``."""
DIGITS_POOL = 1437
"""The digits-10 training examples a pool is taken from (in their stored order)."""
MODELS = ("digits_cnn", "digits_mlp")
"""The networks a protocol trains: :class:`~scissorhands_jax.models.DigitsCNN` and
:class:`~scissorhands_jax.models.DigitsMLP`."""

PROTOCOL_RULES: dict[str, Rule] = {
    "pool_size": Rule(
        lambda v: COUNT.ok(v) and 4 <= v <= DIGITS_POOL, f"an integer in [4, {DIGITS_POOL}]"
    ),
    "candidates": Rule(lambda v: COUNT.ok(v) and v >= 2, "an integer >= 2"),
    "model": Rule(lambda v: v in MODELS, "one of " + ", ".join(map(repr, MODELS))),
    "epochs": COUNT,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "batch_size": COUNT,
    "why": TEXT,
}
"""Every key of a protocol's ``protocol`` section and what its value must be."""


@dataclass(frozen=True)
class Protocol:
    """One audit setting on the embedded digits.

    Attributes:
      name: the protocol's name.
      pool_size: how many digits-10 training examples (in their stored order) form the
        pool; each model trains on a random half of it.
      candidates: size of the candidate forget set F* (drawn from the pool); each model
        forgets the half of F* that it trained on.
      model: ``"digits_cnn"`` or ``"digits_mlp"``.
      epochs, lr, weight_decay, batch_size: the SGD schedule (momentum 0.9) of the
        originals and the retrains.
      why: one line on what the protocol is for.
      methods: method -> the hyperparameters it runs with by default (a method left out
        runs with its release defaults).
    """

    name: str
    pool_size: int
    candidates: int
    model: str
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    why: str
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def setting(self) -> dict[str, Any]:
        """The population and schedule, as a run directory records them (``setting.json``):
        what the trained originals and retrains depend on."""
        record = dataclasses.asdict(self)
        del record["methods"]
        return record


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "scissorhands_cal": ("scissorhands", {"calibration": "temperature"}),
    "scissorhands_soft": ("scissorhands", {}),
    "scissorhands_soft_cal": ("scissorhands", {"calibration": "temperature"}),
}
"""Named opt-in variants of a method: name -> (the method it runs, the settings fixed on
top of its defaults). ``_cal`` adds the Retrain-free output temperature (fitted on the
test set, which no audit model trains on); ``_soft`` marks a softer projection schedule,
which its search space in :mod:`scissorhands_jax.experiment.tune` spells out
(``project_epochs``). Each is tuned with the same budget as every other method and
audited as a row of its own; ``scissorhands`` itself stays the published method."""


def base_method(name: str) -> str:
    """The method of :data:`scissorhands_jax.baselines.METHODS` that ``name`` runs (itself,
    or the method a :data:`VARIANTS` entry names)."""
    return VARIANTS[name][0] if name in VARIANTS else name


def method_names() -> tuple[str, ...]:
    """Every method the audit can run: the baselines' registry, then the variants."""
    from scissorhands_jax.baselines import METHODS

    return (*METHODS, *VARIANTS)


def method_hyperparameters(name: str, protocol: Protocol) -> dict[str, Any]:
    """The hyperparameters method ``name`` runs with in the audit: those of the protocol's
    ``methods`` section for its method, and a variant's fixed settings (:data:`VARIANTS`)
    on top."""
    hps = dict(protocol.methods.get(base_method(name), {}))
    if name in VARIANTS:
        hps.update(VARIANTS[name][1])
    return hps


def protocol_names() -> list[str]:
    """The names of the installed protocols (``configs/audit_<name>.py``)."""
    return sorted(p.stem.removeprefix(PREFIX) for p in CONFIG_DIR.glob(f"{PREFIX}*.py"))


def protocol_path(source: str | os.PathLike) -> Path:
    """The config file of protocol ``source``: an existing file, else an installed name.

    Raises:
      ValueError: neither; the message lists the installed names.
    """
    path = Path(source)
    if path.is_file():
        return path
    name = path.name.removesuffix(".py").removeprefix(PREFIX)
    if path.parent == Path(".") and name in protocol_names():
        return CONFIG_DIR / f"{PREFIX}{name}.py"
    raise ValueError(
        f"--protocol {str(source)!r} is neither an audit protocol's name nor a config file; "
        f"choose one of {', '.join(protocol_names())}, or give the path of a .py file "
        "defining CONFIG = {'protocol': {...}, 'methods': {...}}."
    )


def load_protocol(source: str | os.PathLike | Protocol) -> Protocol:
    """The protocol that ``source`` names, loaded from its config file and checked.

    Args:
      source: an installed protocol's name (``"digits_small"``), the path of a protocol
        config, or a :class:`Protocol` (returned as it is).

    Returns:
      The protocol, named after its file (the stem without ``audit_``).

    Raises:
      ValueError: an unknown name, a file that fails to run or defines no ``CONFIG``
        dict, an unknown or missing key, a value out of range, an unknown method or a
        hyperparameter its method refuses; the message names the file and the key.
    """
    if isinstance(source, Protocol):
        return source
    path = protocol_path(source)
    try:
        config = getattr(exec_config(path), "CONFIG", None)  # sibling imports allowed
    except ValueError as err:  # a config is user code: one line naming the file
        raise ValueError(str(err)) from None
    if not isinstance(config, dict):
        raise ValueError(f"config {path} defines no CONFIG dict.")
    unknown = sorted(set(config) - {"protocol", "methods"})
    if unknown or not isinstance(config.get("protocol"), dict):
        raise ValueError(
            f"{path}: an audit protocol's CONFIG holds a 'protocol' dict and a 'methods' "
            f"dict; got keys {sorted(config)}."
        )
    settings = config["protocol"]
    _check_section(path, settings)
    methods = config.get("methods", {})
    _check_methods(path, methods)
    name = path.stem.removeprefix(PREFIX)
    return Protocol(name=name, **settings, methods={m: dict(h) for m, h in methods.items()})


def load_protocols(sources: Sequence[str | os.PathLike | Protocol]) -> list[Protocol]:
    """The protocols ``sources`` name (:func:`load_protocol`), in order.

    Raises:
      ValueError: no protocol, one that does not load, or two of the same name (their
        outputs would share ``out/<name>``).
    """
    if isinstance(sources, str | os.PathLike | Protocol) or not sources:
        raise ValueError(f"--protocol: give one or more protocols, got {sources!r}.")
    resolved = [load_protocol(s) for s in sources]
    names = [p.name for p in resolved]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"--protocol: two protocols are named {twice} (a file's name is its stem without "
            "'audit_'); rename one, or audit them into different --out directories."
        )
    return resolved


def _check_section(path: Path, settings: dict[str, Any]) -> None:
    known = ", ".join(PROTOCOL_RULES)
    for key in settings:
        if key not in PROTOCOL_RULES:
            raise ValueError(f"{path}: unknown key protocol.{key}; known keys: {known}.")
    missing = [k for k in PROTOCOL_RULES if k not in settings]
    if missing:
        raise ValueError(f"{path}: protocol.{missing[0]} is missing; a protocol sets {known}.")
    for key, rule in PROTOCOL_RULES.items():
        if not rule.ok(settings[key]):
            raise ValueError(f"{path}: protocol.{key} must be {rule.text}, got {settings[key]!r}.")
    if settings["candidates"] > settings["pool_size"] - 2:
        raise ValueError(
            f"{path}: protocol.candidates must leave at least 2 pool examples outside the "
            f"candidate set (at most pool_size - 2 = {settings['pool_size'] - 2}), got "
            f"{settings['candidates']}."
        )


def _check_methods(path: Path, methods: Any) -> None:
    """Each method's hyperparameters, checked by the method's own rules."""
    from scissorhands_jax._method import check_settings
    from scissorhands_jax.baselines import HYPERPARAMETERS, METHODS

    if not isinstance(methods, dict):
        raise ValueError(f"{path}: methods must be a dict of method -> hyperparameters.")
    allowed = sorted(set(METHODS) - {"retrain"})
    for name, hps in methods.items():
        if name not in allowed:
            raise ValueError(
                f"{path}: unknown method methods.{name}; choose from {allowed} (Retrain "
                "trains with the protocol's schedule; variants add their settings to their "
                "method's)."
            )
        if not isinstance(hps, dict):
            raise ValueError(f"{path}: methods.{name} must be a dict, got {hps!r}.")
        try:
            if name == "scissorhands":
                if "eligible" in hps and not REGEX.ok(hps["eligible"]):
                    raise ValueError(f"eligible must be {REGEX.text}, got {hps['eligible']!r}.")
                check_settings(**hps)
            else:
                HYPERPARAMETERS[name].of(name, hps)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: methods.{name}: {err}") from None


def build_model(protocol: Protocol):
    """The protocol's :class:`~scissorhands_jax.models.Model` record."""
    example = jnp.zeros((1, 8, 8, 1), jnp.float32)
    if protocol.model == "digits_cnn":
        return linen_model(DigitsCNN(), example)
    if protocol.model == "digits_mlp":
        return linen_model(DigitsMLP(), example, train_kwarg=None)
    raise ValueError(f"unknown audit model {protocol.model!r}; use one of {MODELS}.")


@dataclass(frozen=True)
class Population:
    """The data of one audit: pool, test set and who trained on / forgets what.

    Attributes:
      pool: ``{"image", "label"}`` arrays of the N pool examples.
      test: the test set (never trained on).
      candidates: bool (N,), the candidate forget set F*.
      members: bool (K, N), model k's training set.
    """

    pool: dict
    test: dict
    candidates: np.ndarray
    members: np.ndarray

    @property
    def forgets(self) -> np.ndarray:
        """bool (K, N): model k's forget request, the candidates it trained on."""
        return self.members & self.candidates

    @property
    def retains(self) -> np.ndarray:
        """bool (K, N): model k's retain set, its members outside F*."""
        return self.members & ~self.candidates

    @property
    def unseen(self) -> np.ndarray:
        """bool (K, N): candidates model k never trained on."""
        return ~self.members & self.candidates


def make_population(protocol: Protocol, num_models: int, seed: int) -> Population:
    """Draws F* and the K training halves (half of F* and half of the rest per model).

    Raises:
      ValueError: ``num_models`` below 4 or odd (models come in complementary pairs).
    """
    if num_models < 4 or num_models % 2:
        raise ValueError(
            f"--shadows must be an even number of at least 4 (models come in complementary "
            f"pairs and each target needs others to compare with); got {num_models}."
        )
    split = load_digits10("random10", 0)
    pool = {k: v[: protocol.pool_size] for k, v in split.train.items()}
    n = protocol.pool_size
    rng = np.random.default_rng(seed)
    candidates = np.zeros(n, bool)
    candidates[rng.choice(n, protocol.candidates, replace=False)] = True
    members = pop.membership_matrix(seed, num_models, n, strata=candidates.astype(np.int64))
    return Population(pool, split.test, candidates, members)
