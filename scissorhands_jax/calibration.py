r"""Retrain-free output calibration: one temperature after the repair (opt-in).

The repair can leave a model globally under- or over-confident: with the GEM projection
on small data its logits on unseen examples sit below those of a retrained model, and a
membership attack reads that shift as a trace of the forget set. Without any Retrain
information, the original model says how confident a model of this class trained on
this data is on examples it never saw. Calibration fits one temperature :math:`T` so
that the unlearned model's *mean confidence* on held-out data equals the original's on
the same data,

.. math::

    \frac{1}{n} \sum_i \max_c \operatorname{softmax}(z^u_i / T)_c
    = \frac{1}{n} \sum_i \max_c \operatorname{softmax}(z^o_i)_c,

with :math:`z^u` the unlearned and :math:`z^o` the original logits (``logits`` and
``target`` of :func:`fit_temperature`), then divides the logits by :math:`T` by scaling
the classifier head's kernel and bias by :math:`1/T` (:func:`scale_head`): the result is
a plain parameter tree, and :math:`\arg\max` (every accuracy) is unchanged.

Why the mean confidence: it needs no labels (the held-out data may be unlabelled), it
is what "under-confident" means, and it falls monotonically as :math:`T` grows (the
maximum of :math:`\operatorname{softmax}(\beta z)` grows with :math:`\beta = 1/T`, its
derivative being :math:`p_{\max}(z_{\max} - \mathbb{E}_p z) \ge 0`), so the equation has
one solution, found by bisection. The mean log-likelihood of the label would need labels
and is not monotone in :math:`T`; the mean logit-scaled confidence is dominated by the
few examples whose confidence is near 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._types import ModelState, Params
from scissorhands_jax.models.adapters import Model

TEMPERATURE_RANGE = (1e-2, 1e2)
"""The search interval of :func:`fit_temperature`; a target confidence outside what the
interval reaches gives its nearest end."""


def mean_confidence(logits: Any, temperature: float = 1.0) -> float:
    r"""The mean over examples of :math:`\max_c \operatorname{softmax}(z / T)_c` (float64).

    Args:
      logits: (n, C) logits :math:`z`.
      temperature: :math:`T > 0`.
    """
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return float(np.mean(1.0 / np.exp(z).sum(axis=-1)))  # the max's softmax: exp(0) / sum


def fit_temperature(logits: Any, target: float, *, iterations: int = 200) -> float:
    """The temperature :math:`T` at which :func:`mean_confidence` of ``logits`` is ``target``.

    Bisection on :math:`\\log T` over :data:`TEMPERATURE_RANGE` (the mean confidence falls
    as :math:`T` grows); a target the range cannot reach gives its nearest end.

    Args:
      logits: (n, C) logits of the model to calibrate on the held-out data.
      target: the mean confidence to reach (the original's on the same data).
      iterations: bisection steps.

    Returns:
      :math:`T` as a Python float.

    Raises:
      ValueError: empty ``logits`` or a ``target`` outside (0, 1].
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (n, C) array, got shape {logits.shape}.")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be a mean confidence in (0, 1], got {target!r}.")
    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mean_confidence(logits, np.exp(mid)) > target:
            lo = mid  # still too confident: a higher temperature
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def _head_candidates(params: Params, num_classes: int) -> list[tuple]:
    """Paths of the sub-trees that look like a linear layer onto ``num_classes`` logits:
    a ``kernel`` whose last axis is ``num_classes`` and a ``bias`` of shape
    ``(num_classes,)``; the last in tree order first."""
    found = []

    def is_layer(node):
        return isinstance(node, Mapping) and "kernel" in node and "bias" in node

    for path, node in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_layer)[0]:
        if not is_layer(node):
            continue
        if np.shape(node["kernel"])[-1:] == (num_classes,) and np.shape(node["bias"]) == (
            num_classes,
        ):
            found.append(path)
    return found[::-1]


def scale_head(params: Params, head: tuple, factor: float) -> Params:
    """``params`` with the kernel and bias of the linear layer at path ``head`` multiplied
    by ``factor``: the logits are multiplied by ``factor``.

    Args:
      params: the parameter tree (not modified).
      head: the layer's path (a key path of :func:`jax.tree_util.tree_flatten_with_path`).
      factor: the scale (:math:`1/T`).
    """

    def scale(path, leaf):
        inside = (
            len(path) > len(head)
            and path[: len(head)] == head
            and getattr(path[len(head)], "key", None) in ("kernel", "bias")
        )
        return (leaf * jnp.asarray(factor, leaf.dtype)) if inside else leaf

    return jax.tree_util.tree_map_with_path(scale, params)


def find_head(model: Model, params: Params, model_state: ModelState, probe: jax.Array) -> tuple:
    """The path of the classifier head: the linear layer onto the logits whose kernel and
    bias, scaled by a factor, scale the logits of ``probe`` by that factor (checked).

    Raises:
      ValueError: no such layer (a head that is not a ``kernel``/``bias`` linear layer,
        or a normalisation after it).
    """
    logits = np.asarray(model.logits(params, model_state, probe), np.float64)
    for head in _head_candidates(params, logits.shape[-1]):
        scaled = model.logits(scale_head(params, head, 0.5), model_state, probe)
        if np.allclose(np.asarray(scaled, np.float64), 0.5 * logits, rtol=1e-4, atol=1e-5):
            return head
    raise ValueError(
        "calibration='temperature' found no classifier head to scale: it needs a final "
        f"linear layer ('kernel' (..., {logits.shape[-1]}) and 'bias' ({logits.shape[-1]},)) "
        "whose outputs are the logits; use calibration='none' for this model."
    )


def _input_batches(data: Any, input_key: str, batch_size: int) -> Iterator[jax.Array]:
    """The inputs of ``data`` (a dict of arrays, or a batch source read once with key 0)."""
    if callable(data):
        for batch in data(jax.random.key(0)):
            yield batch[input_key]
        return
    inputs = data[input_key]
    for i in range(0, np.shape(inputs)[0], batch_size):
        yield jnp.asarray(inputs[i : i + batch_size])


def _input_key(model: Model, data: Any) -> str:
    key = model.batch_spec.input_key if model.batch_spec is not None else "image"
    if not callable(data) and (not isinstance(data, Mapping) or key not in data):
        raise ValueError(
            f"calibration_data must be a dict holding the model's inputs under {key!r} (or "
            f"a batch source), got {type(data).__name__}."
        )
    return key


def _checked_batches(model: Model, data: Any, batch_size: int, *, first_only: bool = False):
    batches = []
    for x in _input_batches(data, _input_key(model, data), batch_size):
        if np.shape(x)[0]:
            batches.append(x)
            if first_only:
                break
    if not batches:
        raise ValueError("calibration_data holds no examples; pass a non-empty held-out set.")
    return batches


def check_calibration(model: Model, params: Params, model_state: ModelState, data: Any) -> None:
    """Raises ValueError, before any work, unless ``data`` holds the model's inputs and
    the model has a head :func:`calibrate_temperature` can scale (one batch is read)."""
    probe = _checked_batches(model, data, 256, first_only=True)[0]
    find_head(model, params, model_state, probe)


def _logits(model, params, model_state, batches) -> np.ndarray:
    return np.concatenate([np.asarray(model.logits(params, model_state, x)) for x in batches])


def calibrate_temperature(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    original_params: Params,
    original_state: ModelState,
    data: Any,
    batch_size: int = 1024,
) -> tuple[Params, dict[str, Any]]:
    """Divides the logits of ``params`` by the temperature at which their mean confidence
    on ``data`` is the original model's on ``data``.

    Nothing else is read: the unlearned model, the original model and the held-out data.

    Args:
      model: the :class:`~scissorhands_jax.models.Model`.
      params: the unlearned parameters (not modified).
      model_state: their model state.
      original_params: the original (trained) parameters.
      original_state: the original model state.
      data: held-out data: a dict holding the model's inputs (its ``batch_spec``'s input
        key, ``"image"`` by default; labels are not read) or a batch source.
      batch_size: examples per forward pass.

    Returns:
      ``(params, info)``: the parameters with the head scaled by :math:`1/T`, and
      ``{"temperature", "confidence_original", "confidence_before", "confidence_after",
      "head"}``.

    Raises:
      ValueError: ``data`` without the model's inputs, or a model without a linear head.
    """
    batches = _checked_batches(model, data, batch_size)
    z_original = _logits(model, original_params, original_state, batches)
    z = _logits(model, params, model_state, batches)
    target = mean_confidence(z_original)
    temperature = fit_temperature(z, target)
    head = find_head(model, params, model_state, batches[0])
    calibrated = scale_head(params, head, 1.0 / temperature)
    info = {
        "temperature": temperature,
        "confidence_original": target,
        "confidence_before": mean_confidence(z),
        "confidence_after": mean_confidence(_logits(model, calibrated, model_state, batches)),
        "head": jax.tree_util.keystr(head),
    }
    return calibrated, info
