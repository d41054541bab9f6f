"""Attributes of a package loaded on first use (PEP 562), so that importing it is cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(
    package: str, attributes: dict[str, str], submodules: tuple[str, ...] = ()
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package's ``__init__``.

    Args:
      package: the package's ``__name__``.
      attributes: public name -> the module (absolute) that defines it.
      submodules: names of subpackages/modules reachable as attributes.

    Returns:
      ``(__getattr__, __dir__)``; a loaded attribute is cached in the package's globals.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> object:
        if name in attributes:
            value = getattr(importlib.import_module(attributes[name]), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *attributes, *submodules})

    return __getattr__, __dir__
