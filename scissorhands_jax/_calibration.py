r"""Retrain-free output calibration: one temperature after the repair (opt-in).

The repair can leave a model globally under- or over-confident: with the GEM projection
on small data its logits on unseen examples sit below those of a retrained model, and a
membership attack reads that shift as a trace of the forget set. Without any Retrain
information, the original model says how confident a model of this class trained on
this data is on examples it never saw. Calibration fits one temperature :math:`T` so
that the unlearned model's mean *logit-scaled confidence* of the true class on held-out
data equals the original's on the same data,

.. math::

    \frac{1}{n} \sum_i \phi(z^u_i / T, y_i) = \frac{1}{n} \sum_i \phi(z^o_i, y_i),
    \qquad \phi(z, y) = \log \frac{p_y}{1 - p_y} = z_y - \log \sum_{j \ne y} e^{z_j},

with :math:`z^u` the unlearned and :math:`z^o` the original logits and :math:`y` the
labels (``logits``, ``target`` and ``labels`` of :func:`fit_temperature`), then divides
the logits by :math:`T` by scaling the classifier head's kernel and bias by :math:`1/T`
(:func:`scale_head`): the result is a plain parameter tree, and :math:`\arg\max` (every
accuracy) is unchanged.

Why :math:`\phi`: it is the statistic a likelihood-ratio membership attack reads
(:func:`scissorhands_jax.metrics.logit_confidence`), so matching its level removes the
global shift such an attack would see. Measured on the audit's ``digits_small``
protocol (16 models, the default Scissorhands), matching it took U-LiRA from 0.870 to
0.695; matching the mean log-likelihood of the label reached 0.748 and the label-free
mean top-class probability only 0.814.
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


def mean_logit_confidence(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    r"""The mean over examples of :math:`\phi(z / T, y)` (float64; see
    :func:`scissorhands_jax.metrics.logit_confidence`).

    Args:
      logits: (n, C) logits :math:`z`.
      labels: (n,) integer labels :math:`y`.
      temperature: :math:`T > 0`.
    """
    from scissorhands_jax.metrics import logit_confidence

    return float(np.mean(logit_confidence(np.asarray(logits, np.float64) / temperature, labels)))


def fit_temperature(logits: Any, labels: Any, target: float, *, iterations: int = 100) -> float:
    r"""The temperature :math:`T` at which :func:`mean_logit_confidence` of ``logits`` is
    ``target``.

    The mean is evaluated on a grid of 401 temperatures, log-spaced over
    :data:`TEMPERATURE_RANGE`; of the intervals where it crosses ``target``, the one
    nearest :math:`T = 1` (the smallest change) is refined by bisection on
    :math:`\log T`. The mean falls as :math:`T` grows wherever the model predicts the
    label, so on a model that mostly does there is one crossing. A target the range
    does not reach gives the grid temperature nearest to it.

    Args:
      logits: (n, C) logits of the model to calibrate on the held-out data.
      labels: (n,) integer labels of the held-out data.
      target: the mean to reach (the original model's on the same data).
      iterations: bisection steps.

    Returns:
      :math:`T` as a Python float.

    Raises:
      ValueError: empty ``logits``, labels of another length, or a non-finite ``target``.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (n, C) array, got shape {logits.shape}.")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape {logits.shape[:1]}, got {labels.shape}.")
    if not np.isfinite(target):
        raise ValueError(f"target must be a finite number, got {target!r}.")

    def gap(u):
        return mean_logit_confidence(logits, labels, np.exp(u)) - target

    grid = np.linspace(np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1]), 401)
    gaps = np.array([gap(u) for u in grid])
    crossings = np.flatnonzero(np.sign(gaps[:-1]) != np.sign(gaps[1:]))
    if crossings.size == 0:
        return float(np.exp(grid[np.argmin(np.abs(gaps))]))
    i = crossings[np.argmin(np.abs(grid[crossings] + grid[crossings + 1]))]
    lo, hi, g_lo = grid[i], grid[i + 1], gaps[i]
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        g_mid = gap(mid)
        if np.sign(g_mid) == np.sign(g_lo):
            lo, g_lo = mid, g_mid
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


def _batches(data: Any, keys: tuple[str, str], batch_size: int) -> Iterator[tuple]:
    """``(inputs, labels)`` of ``data`` (a dict of arrays, or a batch source read once
    with key 0)."""
    if callable(data):
        for batch in data(jax.random.key(0)):
            yield tuple(batch[k] for k in keys)
        return
    n = np.shape(data[keys[0]])[0]
    for i in range(0, n, batch_size):
        yield tuple(np.asarray(data[k][i : i + batch_size]) for k in keys)


def _keys(model: Model, data: Any) -> tuple[str, str]:
    spec = model.batch_spec
    keys = (spec.input_key, spec.label_key) if spec is not None else ("image", "label")
    if not callable(data) and (not isinstance(data, Mapping) or not set(keys) <= set(data)):
        raise ValueError(
            f"calibration_data must be a dict holding the model's inputs and labels under "
            f"{keys} (or a batch source), got {type(data).__name__}"
            + (f" with keys {sorted(data)}." if isinstance(data, Mapping) else ".")
        )
    return keys


def _checked_batches(model: Model, data: Any, batch_size: int, *, first_only: bool = False):
    batches = []
    for x, y in _batches(data, _keys(model, data), batch_size):
        if np.shape(x)[0]:
            batches.append((jnp.asarray(x), np.asarray(y)))
            if first_only:
                break
    if not batches:
        raise ValueError("calibration_data holds no examples; pass a non-empty held-out set.")
    return batches


def check_calibration(model: Model, params: Params, model_state: ModelState, data: Any) -> None:
    """Raises ValueError, before any work, unless ``data`` holds the model's inputs and
    labels and the model has a head :func:`calibrate_temperature` can scale (one batch
    is read)."""
    probe = _checked_batches(model, data, 256, first_only=True)[0][0]
    find_head(model, params, model_state, probe)


def _logits(model, params, model_state, batches) -> np.ndarray:
    return np.concatenate([np.asarray(model.logits(params, model_state, x)) for x, _ in batches])


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
    """Divides the logits of ``params`` by the temperature at which their mean
    logit-scaled confidence on ``data`` is the original model's on ``data``
    (:func:`fit_temperature`).

    Nothing else is read: the unlearned model, the original model and the held-out data.

    Args:
      model: the :class:`~scissorhands_jax.models.Model`.
      params: the unlearned parameters (not modified).
      model_state: their model state.
      original_params: the original (trained) parameters.
      original_state: the original model state.
      data: held-out data: a dict holding the model's inputs and integer labels (its
        ``batch_spec``'s keys, ``"image"`` and ``"label"`` by default) or a batch source.
      batch_size: examples per forward pass.

    Returns:
      ``(params, info)``: the parameters with the head scaled by :math:`1/T`, and
      ``{"temperature", "logit_confidence_original", "logit_confidence_before",
      "logit_confidence_after", "head"}`` (the means on ``data``).

    Raises:
      ValueError: ``data`` without the model's inputs or labels, or a model without a
        linear head.
    """
    batches = _checked_batches(model, data, batch_size)
    labels = np.concatenate([y for _, y in batches])
    z_original = _logits(model, original_params, original_state, batches)
    z = _logits(model, params, model_state, batches)
    target = mean_logit_confidence(z_original, labels)
    temperature = fit_temperature(z, labels, target)
    head = find_head(model, params, model_state, batches[0][0])
    calibrated = scale_head(params, head, 1.0 / temperature)
    z_after = _logits(model, calibrated, model_state, batches)
    info = {
        "temperature": temperature,
        "logit_confidence_original": target,
        "logit_confidence_before": mean_logit_confidence(z, labels),
        "logit_confidence_after": mean_logit_confidence(z_after, labels),
        "head": jax.tree_util.keystr(head),
    }
    return calibrated, info
