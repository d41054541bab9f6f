"""Which parameters may be re-initialised, and the masked re-initialisation itself."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._first_conv import first_conv_module
from scissorhands_jax._types import Mask, Params, PRNGKey

PathPredicate = Callable[[str], bool]
"""A predicate on a parameter path such as ``"layer4/conv1/kernel"``."""

NORM_PATTERN = re.compile(
    r"(^|[/_.\-])((batch|layer|group|instance|rms)_?norm\w*|bn\w*|ln\w*|gn\w*|norm\w*)($|[/_.\-])"
    r"|batch_stats|(^|/)(mean|var)$",
    re.IGNORECASE,
)
"""Paths that name a normalisation layer or its running statistics: never eligible."""

FIRST_CONV = "all_but_first_conv"

PRESETS: dict[str, str] = {
    "layer3,layer4,fc": r"(^|/)(layer3|layer4|fc)(/|$|_)",
    "layer4,fc": r"(^|/)(layer4|fc)(/|$|_)",
    FIRST_CONV: "every leaf but those of the first convolution, found by structure",
}
"""The eligible sets of the release. ResNets name their stages ``layer1..layer4`` and
``fc``: those presets are regexes over paths. ``"all_but_first_conv"`` is found by
structure, whatever the layers are called (:func:`eligible_mask`), so it needs the
parameters: it is not a regex."""


def path_str(path: Sequence[Any]) -> str:
    """Joins a JAX key path into ``"a/b/c"`` (dict keys, attributes and indices alike)."""
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey) and entry.name == "value":
            continue  # nnx.Variable wraps each array in `.value`
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def leaf_paths(params: Params) -> list[str]:
    """The path strings of all leaves of ``params``, in ``jax.tree.leaves`` order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def is_norm_path(path: str) -> bool:
    """True for parameters or statistics of a normalisation layer."""
    return NORM_PATTERN.search(path) is not None


def is_bias_path(path: str) -> bool:
    """True for a bias leaf (its last path component is ``bias``)."""
    return path.rsplit("/", 1)[-1] == "bias"


def _scale_only_modules(paths: Sequence[str]) -> set[str]:
    """Modules that hold a ``scale`` but no ``kernel``: normalisation layers, whatever
    their name (a ResNet's ``downsample`` BatchNorm, say)."""
    leaves_of: dict[str, set[str]] = {}
    for path in paths:
        parent, _, name = path.rpartition("/")
        leaves_of.setdefault(parent, set()).add(name)
    return {m for m, names in leaves_of.items() if "scale" in names and "kernel" not in names}


def path_regex(pattern: str) -> PathPredicate:
    """A predicate that is True where ``re.search(pattern, path)`` matches.

    ``pattern`` may also be a key of :data:`PRESETS`, e.g. ``"layer4,fc"``.

    Raises:
      ValueError: an invalid regex, or ``"all_but_first_conv"``, which needs the
        parameters (use :func:`eligible_mask`).
    """
    if pattern == FIRST_CONV:
        raise ValueError(
            f"{FIRST_CONV!r} is found from the parameters' structure, not their paths: use "
            f"eligible_mask(params, {FIRST_CONV!r})."
        )
    try:
        compiled = re.compile(PRESETS.get(pattern, pattern))
    except (re.error, TypeError) as err:
        raise ValueError(
            f"eligible: {pattern!r} is not a valid regular expression ({err}); pass a regex "
            f"such as r'layer3|layer4|fc' or a preset name: {sorted(PRESETS)}."
        ) from None
    return lambda path: compiled.search(path) is not None


def eligible_mask(params: Params, eligible: PathPredicate | str | None = None) -> Mask:
    """Turns an eligibility predicate into a boolean tree, once.

    Normalisation parameters and running statistics are never eligible, whatever the
    predicate says (:func:`is_norm_path`): the release's name filter let a ResNet
    downsample BatchNorm through, which we treat as an accident.

    The preset ``"all_but_first_conv"`` leaves out the module of the model's first
    convolution, whatever it is called (``Conv_0``, ``conv1``, ``stem``): the
    convolutions are the 4-D leaves (kernels ``(h, w, in, out)``), in the tree's own
    order (dicts in insertion order, which is the order in which Flax Linen and NNX
    define the layers), and the first of them must be the only convolution that reads
    channels no other one writes (the input's). A tree where the two disagree (its
    dicts sorted by a ``jax.tree.map``, say, with layers not named in order), or where
    no convolution or several could read the input, is refused with the reason; name
    the layers with a regex then.

    Args:
      params: the parameter pytree.
      eligible: a predicate on the path string, a regex or preset name (see
        :func:`path_regex`), or None for every non-normalisation leaf.

    Returns:
      A pytree shaped like ``params`` of Python bools, one per leaf.

    Raises:
      ValueError: if no leaf is eligible (the message lists the available paths),
        ``eligible`` is of another type or an invalid regex, or
        ``"all_but_first_conv"`` cannot tell the first convolution.
    """
    paths = leaf_paths(params)
    if eligible is None:
        pred: PathPredicate = lambda path: True  # noqa: E731
    elif eligible == FIRST_CONV:
        pred = _all_but_module(first_conv_module(params, paths, is_norm_path))
    elif isinstance(eligible, str):
        pred = path_regex(eligible)
    elif callable(eligible):
        pred = eligible
    else:
        raise ValueError(
            f"eligible must be None, a regex or preset name (a str), a predicate on the "
            f"parameter path or an Eligibility, got {eligible!r}; e.g. eligible='layer4,fc' "
            f"(presets: {sorted(PRESETS)})."
        )
    norm_modules = _scale_only_modules(paths)

    def keep(path: str) -> bool:
        return pred(path) and not is_norm_path(path) and path.rpartition("/")[0] not in norm_modules

    mask = jax.tree.unflatten(jax.tree.structure(params), [bool(keep(p)) for p in paths])
    if not any(jax.tree.leaves(mask)):
        shown = ", ".join(paths[:20]) + (" ..." if len(paths) > 20 else "")
        raise ValueError(
            f"no parameter is eligible for re-initialisation under {eligible!r}; "
            f"the parameter paths are: {shown}"
        )
    return mask


def _all_but_module(module: str) -> PathPredicate:
    """True for every path outside ``module`` (a top-level leaf when ``module`` is "")."""
    if not module:
        return lambda path: "/" in path
    return lambda path: not path.startswith(module + "/")


class Eligibility(NamedTuple):
    """Separate leaf sets for the two phases (see :func:`release_bn_parity`).

    Attributes:
      reinit: bool-per-leaf tree of the leaves that may be re-initialised.
      protect: bool-per-leaf tree of the leaves the memory and projection act on.
    """

    reinit: Mask
    protect: Mask


def resolve_eligibility(params: Params, eligible: Any) -> Eligibility:
    """The re-init and projection leaf sets of any form ``eligible`` takes (see
    :func:`scissorhands_jax.scissorhands`), checked before any work.

    Raises:
      ValueError: see :func:`eligible_mask`; an :class:`Eligibility` whose trees do not
        have the structure of ``params`` or hold anything but Python bools.
    """
    if not isinstance(eligible, Eligibility):
        mask = eligible_mask(params, eligible)
        return Eligibility(mask, mask)
    for name, tree in zip(Eligibility._fields, eligible, strict=True):
        if jax.tree.structure(tree) != jax.tree.structure(params):
            raise ValueError(
                f"Eligibility.{name} must have the structure of the parameters (one bool per "
                "leaf); build it with eligible_mask(params, ...) or release_bn_parity(params)."
            )
        if not all(isinstance(e, (bool, np.bool_)) for e in jax.tree.leaves(tree)):
            raise ValueError(f"Eligibility.{name} must hold one Python bool per leaf.")
    return eligible


def release_bn_parity(params: Params, stages: str = "layer3,layer4,fc") -> Eligibility:
    """The release's leaf sets on a BatchNorm ResNet (release parity; off by default).

    The release protects (memory and projection) every parameter of the chosen stages,
    BatchNorm scales and biases included, and re-initialises those whose PyTorch name
    does not contain ``"bn"``. That filter lets a ResNet's downsample BatchNorm through
    (PyTorch names it ``downsample.1``): its 1-D weight is then re-drawn by the
    kaiming-uniform default, i.e. uniform in ±1. Here that BatchNorm is the module
    ``downsample_bn``, eligible for re-initialisation like a convolution.

    To reproduce the release, pair it with
    ``TrimSettings(reinit="torch", saliency_train_mode=True, update_stats=True)``: the
    saliency runs in training mode and its forget batches move the running statistics.
    The library's own default treats the downsample BatchNorm as an accident and leaves
    every normalisation layer alone (:func:`eligible_mask`).

    Args:
      params: the ResNet's parameters.
      stages: a :data:`PRESETS` name or a regex on the paths of the chosen stages.

    Returns:
      An :class:`Eligibility` to pass as ``eligible`` to
      :func:`scissorhands_jax.scissorhands`.

    Raises:
      ValueError: if no leaf matches ``stages``.
    """
    in_stage = path_regex(stages)
    paths = leaf_paths(params)
    protect = [in_stage(p) for p in paths]
    reinit = [
        keep and ("bn" not in p.lower() or "downsample_bn" in p)
        for p, keep in zip(paths, protect, strict=True)
    ]
    if not any(protect):
        raise ValueError(f"no parameter path matches {stages!r}.")
    treedef = jax.tree.structure(params)
    return Eligibility(jax.tree.unflatten(treedef, reinit), jax.tree.unflatten(treedef, protect))


@jax.jit
def torch_default_init(key: PRNGKey, params: Params) -> Params:
    r"""Fresh values as PyTorch's default initialiser draws them (release parity).

    Every leaf with at least two axes gets kaiming-uniform with :math:`a=\sqrt 5`,
    i.e. :math:`U(\pm 1/\sqrt{\text{fan\_in}})`, with Flax's layout (the last axis is the
    output features, ``fan_in`` is the product of the others). One-dimensional leaves
    are treated as a column, as the release does (fan_in = 1, so :math:`U(\pm 1)`);
    biases are zeroed by :func:`masked_reinit` anyway.

    Args:
      key: PRNG key.
      params: a tree giving shapes and dtypes.

    Returns:
      A tree shaped like ``params`` of fresh values.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))

    def draw(k, leaf):
        fan_in = math.prod(leaf.shape[:-1]) if leaf.ndim >= 2 else 1
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        return jax.random.uniform(k, leaf.shape, leaf.dtype, -bound, bound)

    return jax.tree.unflatten(
        treedef, [draw(k, leaf) for k, leaf in zip(keys, leaves, strict=True)]
    )


def masked_reinit(params: Params, mask: Mask, fresh: Params, *, eligible: Mask) -> Params:
    r"""Re-initialises the selected entries of the eligible leaves.

    .. math::
        \theta' = m \odot \theta_{\text{fresh}} + (1 - m) \odot \theta

    applied as ``where(m, fresh, params)`` so unselected entries are bit-identical; in
    bias leaves the selected entries become 0 instead of ``fresh``. ``m`` is ``mask``
    restricted to leaves where ``eligible`` is True. ``params`` is not modified.

    Args:
      params: the trained parameters.
      mask: boolean tree shaped like ``params`` (e.g. from :func:`top_k_mask`).
      fresh: tree shaped like ``params`` with freshly initialised values: the model's
        own ``init`` with a new key, or :func:`torch_default_init`.
      eligible: tree of bools per leaf (see :func:`eligible_mask`).

    Returns:
      The trimmed parameters.

    Raises:
      ValueError: trees of another structure than ``params``, or on an eligible leaf a
        non-float parameter, a mask that is not bool or fresh values that are not float,
        or either of another shape (nothing is broadcast); ``eligible`` not made of
        Python bools; NaN or infinite fresh values at selected entries of a leaf that
        is not a bias (checked outside ``jax.jit``, where the values are concrete; the
        other checks read shapes and dtypes only, so they hold inside ``jax.jit`` too).

    Example:
      >>> import jax.numpy as jnp
      >>> import scissorhands_jax as shs
      >>> p = {"kernel": jnp.ones(3), "bias": jnp.ones(3)}
      >>> m = {"kernel": jnp.array([True, False, True]), "bias": jnp.array([True, False, False])}
      >>> out = shs.masked_reinit(p, m, {"kernel": jnp.zeros(3) + 7, "bias": jnp.zeros(3) + 7},
      ...                         eligible={"kernel": True, "bias": True})
      >>> out["kernel"].tolist(), out["bias"].tolist()
      ([7.0, 1.0, 7.0], [0.0, 1.0, 1.0])
    """

    flags = _check_reinit_inputs(params, mask, fresh, eligible)

    def one(path, p, m, f, e):
        if not e:
            return p
        new = jnp.zeros_like(p) if is_bias_path(path_str(path)) else f.astype(p.dtype)
        return jnp.where(m, new, p)

    eligible = jax.tree.unflatten(jax.tree.structure(params), flags)
    return jax.tree_util.tree_map_with_path(one, params, mask, fresh, eligible)


def _same_structure(name: str, tree: Any, params: Params) -> None:
    """Raises ValueError unless ``tree`` has the structure of ``params`` (naming the
    leaf paths that differ)."""
    if jax.tree.structure(tree) == jax.tree.structure(params):
        return
    want, got = leaf_paths(params), leaf_paths(tree)
    want_set, got_set = set(want), set(got)
    missing = [p for p in want if p not in got_set][:5]
    extra = [p for p in got if p not in want_set][:5]
    raise ValueError(
        f"masked_reinit: `{name}` must have the structure of `params` (one leaf per "
        f"parameter leaf); missing {missing}, unexpected {extra}"
        + ("" if missing or extra else f", or other containers: {jax.tree.structure(tree)}")
        + "."
    )


def _check_reinit_inputs(params: Params, mask: Mask, fresh: Params, eligible: Mask) -> list:
    """The eligible flags as Python bools, after checking the four trees: one structure,
    and on every eligible leaf a float parameter, a bool mask and fresh values of its
    exact shape (nothing is broadcast)."""
    for name, tree in (("mask", mask), ("fresh", fresh), ("eligible", eligible)):
        _same_structure(name, tree, params)
    flags = []
    leaves = [jax.tree.leaves(t) for t in (params, mask, fresh, eligible)]
    for path, p, m, f, e in zip(leaf_paths(params), *leaves, strict=True):
        array = isinstance(e, (np.ndarray, jax.Array)) and not isinstance(e, jax.core.Tracer)
        if not (isinstance(e, (bool, np.bool_)) or (array and e.shape == () and e.dtype == bool)):
            raise ValueError(
                f"masked_reinit: `eligible` must hold one Python bool per leaf (see "
                f"eligible_mask), got {e!r} at {path!r}."
            )
        flags.append(bool(e))
        if not e:
            continue
        shape = np.shape(p)
        if not jnp.issubdtype(jnp.result_type(p), jnp.inexact):
            raise ValueError(
                f"masked_reinit: parameter {path!r} has dtype {jnp.result_type(p)}; only float "
                "leaves can be re-initialised (leave it out of `eligible`)."
            )
        if np.shape(m) != shape or jnp.result_type(m) != jnp.bool_:
            raise ValueError(
                f"masked_reinit: the mask of {path!r} must be a bool array of the parameter's "
                f"shape {shape}, got {jnp.result_type(m)} of shape {np.shape(m)} (a float "
                "mask is not read as True/False; compare it, e.g. `scores > tau`)."
            )
        if np.shape(f) != shape or not jnp.issubdtype(jnp.result_type(f), jnp.inexact):
            raise ValueError(
                f"masked_reinit: the fresh values of {path!r} must be a float array of the "
                f"parameter's shape {shape}, got {jnp.result_type(f)} of shape {np.shape(f)} "
                "(draw them from the same model, e.g. model.init(key) or torch_default_init)."
            )
        concrete = not any(isinstance(x, jax.core.Tracer) for x in (m, f))
        bad = 0
        if concrete and not is_bias_path(path):
            bad = int(np.sum(~np.isfinite(np.asarray(f)[np.asarray(m)])))
        if bad:
            raise ValueError(
                f"masked_reinit: the fresh values of {path!r} hold {bad} NaN or infinite "
                "value(s) at selected entries; they would be written into the model (draw "
                "fresh values again, e.g. model.init(key) or torch_default_init)."
            )
    return flags
