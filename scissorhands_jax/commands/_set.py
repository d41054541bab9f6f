"""The one reading of ``--set`` by every command (the standard library only: cheap to
import)."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from scissorhands_jax._choices import METHOD_NAMES


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
