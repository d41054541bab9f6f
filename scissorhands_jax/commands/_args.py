"""Flags shared by the commands, and the one reading of ``--set`` (argparse only: cheap
to import)."""

from __future__ import annotations

import argparse
import ast
import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from scissorhands_jax._choices import METHOD_NAMES, SEED_LIMIT, config_names


def seed(text: str) -> int:
    """An argparse ``type``: a seed, an integer in ``[0, 2**31)``."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"a seed is an integer in [0, 2**31), got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


NO_PROGRESS_HELP = "no progress bars and no per-epoch lines (warnings and errors still print)"


def add_mesh_argument(p: argparse.ArgumentParser) -> None:
    """``--mesh``: the devices a command runs data-parallel on."""
    p.add_argument(
        "--mesh",
        default="auto",
        metavar="auto|N",
        help="run data-parallel on every device (auto, the default) or on the first N; "
        "1 runs on one device",
    )


def add_common_arguments(p: argparse.ArgumentParser, *, mesh: bool = True) -> None:
    """``CONFIG``, ``--smoke``, ``--set``, ``--data-dir``, ``--no-progress`` and, with
    ``mesh``, ``--mesh``."""
    p.add_argument(
        "config", help=f"an installed config's name ({', '.join(config_names())}) or a config file"
    )
    p.add_argument("--smoke", action="store_true", help="merge the config's SMOKE (seconds)")
    add_set_argument(p)
    p.add_argument("--data-dir", help="data directory (overrides data.data_dir)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    if mesh:
        add_mesh_argument(p)


SET_HELP = (
    "override one config value, e.g. --set unlearn.lr=0.01, or one hyperparameter of a "
    "method, e.g. --set methods.ft.lr=0.02 (repeatable; values are Python literals or words)"
)


def add_set_argument(p: argparse.ArgumentParser) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable): the one override flag of every command."""
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=SET_HELP)


class Overrides(NamedTuple):
    """What ``--set`` asked for, read by :func:`parse_set`."""

    config: list[str]
    """``"section.key=value"`` items for the config loader (which checks them)."""
    methods: dict[str, dict[str, Any]]
    """Method name -> hyperparameter name -> value, from ``methods.NAME.KEY=VALUE``."""


def literal(text: str) -> Any:
    """A ``--set`` value: a Python literal where it parses (``0.01``, ``True``, ``[1, 2]``),
    else the text itself (a bare word such as ``orthogonal`` is a string)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_set(
    items: Sequence[str],
    *,
    sections: Collection[str] = (),
    methods: Collection[str] = METHOD_NAMES,
    method_sections: Mapping[str, str] | None = None,
) -> Overrides:
    """Reads ``--set`` items: ``methods.NAME.KEY=VALUE`` sets a method's hyperparameter,
    every other ``SECTION.KEY=VALUE`` a config value (left as text for the config loader,
    which checks the key, the type and the range). A method whose hyperparameters are a
    section of the config (``method_sections``: a classifier config holds Scissorhands'
    settings in ``unlearn``) gets them there: ``methods.scissorhands.lr=0.01`` is
    ``unlearn.lr=0.01``, in its place among the items.

    The old spelling of a method's hyperparameter, ``NAME.KEY=VALUE`` for a method of
    ``methods`` that is not a config section of ``sections``, still works for one release
    and warns (``DeprecationWarning``) with the new spelling.

    Args:
      items: the ``--set`` values, in the order given (a later one wins).
      sections: the config's section names (they win over method names).
      methods: the method names ``methods.NAME`` may take.
      method_sections: method name -> the config section holding its hyperparameters.

    Returns:
      The :class:`Overrides`.

    Raises:
      ValueError: an item without ``=`` or without a key, or ``methods.`` not followed by
        a known method and one hyperparameter name; the message shows the spelling.
    """
    config: list[str] = []
    chosen: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, text = item.partition("=")
        words = target.strip().split(".")
        if not sep or not all(words):
            raise ValueError(
                f"--set {item!r}: write SECTION.KEY=VALUE (e.g. --set unlearn.lr=0.01) or "
                "methods.METHOD.KEY=VALUE (e.g. --set methods.ft.lr=0.02)."
            )
        if words[0] in methods and words[0] not in sections and len(words) == 2:
            new = f"methods.{target.strip()}={text}"
            warnings.warn(
                f"--set {item} is the old spelling of a method's hyperparameter and will be "
                f"removed in the next release; write --set {new}",
                DeprecationWarning,
                stacklevel=2,
            )
            words = ["methods", *words]
        if words[0] != "methods":
            config.append(item)
            continue
        if len(words) != 3 or words[1] not in methods:
            raise ValueError(
                f"--set {item!r}: write methods.METHOD.KEY=VALUE with METHOD one of "
                f"{', '.join(methods)} (e.g. --set methods.ft.lr=0.02)."
            )
        section = (method_sections or {}).get(words[1])
        if section is None:
            chosen.setdefault(words[1], {})[words[2]] = literal(text)
        else:
            config.append(f"{section}.{words[2]}={text}")
    return Overrides(config, chosen)


def load_config(args: argparse.Namespace, command: str, *, runs: str | None = None) -> dict:
    """The classifier config of ``args`` (``config``, ``--smoke``, ``--set``, ``--data-dir``),
    complete and checked, for ``scissorhands COMMAND``, which runs the unlearning method
    ``runs`` (None: none); nothing is written before it returns.

    Raises:
      ValueError: a bad ``--set`` (:func:`parse_set`), a hyperparameter of a method this
        command does not run, or a config the loader refuses.
    """
    from scissorhands_jax.experiment.config import SCHEMAS
    from scissorhands_jax.experiment.config import load_config as load
    from scissorhands_jax.experiment.rules import METHOD_SECTION

    into = {"scissorhands": METHOD_SECTION["classifier"]}
    wanted = parse_set(args.set, sections=SCHEMAS["classifier"], method_sections=into)
    if wanted.methods:  # methods.scissorhands.* went into its section
        name, values = next(iter(wanted.methods.items()))
        does = f"runs {runs} only" if runs else "runs no unlearning method"
        raise ValueError(
            f"--set methods.{name}.{next(iter(values))}: scissorhands {command} {does}; "
            f"the other methods' hyperparameters are for scissorhands compare --methods {name}."
        )
    overrides = list(wanted.config)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir!r}")
    return load(args.config, smoke=args.smoke, overrides=overrides)
