"""The first convolution of a model, found by the structure of its parameters.

Names differ between models (``Conv_0`` for Linen's automatic names, ``conv1`` in Flax's
own MNIST example, ``stem`` elsewhere), so the ``"all_but_first_conv"`` preset reads
structure instead: the convolutions are the 4-D leaves (a 2-D convolution's kernel,
``(h, w, in, out)``), taken in the tree's own order, and the first one must also be the
one that reads the input, i.e. the only convolution whose input channels no other
convolution writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax

from scissorhands_jax._types import Params


def _own_order(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, leaf)`` in the tree's own order: mappings in their insertion order (the
    order in which Flax Linen and NNX define the layers), sequences by index."""
    if isinstance(tree, Mapping):
        items = list(tree.items())
    elif isinstance(tree, (list, tuple)):
        items = list(enumerate(tree))
    else:
        return [(prefix, tree)]
    out = []
    for key, child in items:
        out.extend(_own_order(child, f"{prefix}/{key}" if prefix else str(key)))
    return out


def first_conv_module(params: Params, paths: list[str], is_norm) -> str:
    """The path of the module holding the model's first convolution.

    Args:
      params: the parameter tree.
      paths: its leaf paths (as :func:`~scissorhands_jax._reinit.leaf_paths` spells them).
      is_norm: predicate on a path, True for normalisation leaves (never convolutions).

    Returns:
      The module path (the kernel's path without its last component).

    Raises:
      ValueError: no 4-D kernel, or the first convolution is ambiguous (the message
        says why and suggests a regex).
    """
    known = set(paths)
    ordered = [(p, x) for p, x in _own_order(params) if p in known]
    if len(ordered) != len(paths):  # a container this walk does not know: JAX's order
        ordered = list(zip(paths, jax.tree.leaves(params), strict=True))
    convs = [
        (p, tuple(x.shape))
        for p, x in ordered
        if len(getattr(x, "shape", ())) == 4 and not is_norm(p)
    ]
    if not convs:
        raise ValueError(
            "eligible='all_but_first_conv': the parameters hold no convolution (no 4-D "
            "kernel); pass None (every leaf), a regex on the paths or a predicate instead."
        )
    sources = [
        p
        for p, shape in convs
        if shape[2] not in {other[3] for q, other in convs if q != p}  # reads the input
    ]
    first = convs[0][0]
    if sources == [first]:
        return first.rpartition("/")[0]
    if not sources:
        why = (
            "every convolution reads a channel count that another one writes (e.g. a last "
            "convolution back to the input's channels), so none is clearly the one that "
            "reads the input"
        )
    elif len(sources) > 1:
        why = (
            f"{len(sources)} convolutions read channel counts that no other one writes "
            f"({', '.join(sources)}): each could read the input"
        )
    else:
        why = (
            f"the tree lists {first} first, but {sources[0]} is the one that reads channels "
            "no other convolution writes: the tree's order is not the model's (jax.tree.map "
            "returns dicts sorted by name)"
        )
    module = (sources[0] if len(sources) == 1 else first).rpartition("/")[0]
    hint = f"r'^(?!{re.escape(module)}/)'" if module else "a regex on the paths"
    raise ValueError(
        f"eligible='all_but_first_conv': cannot tell the first convolution: {why}. Name "
        f"the layers to keep instead, e.g. eligible={hint}."
    )
