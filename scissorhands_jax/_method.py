"""Scissorhands for classifiers: trim by connection sensitivity, then repair under
gradient projection.

Wu & Harandi, "Scissorhands: Scrub Data Influence via Connection Sensitivity in
Networks", ECCV 2024 (arXiv 2401.06187). The defaults (see
:mod:`scissorhands_jax._settings`) are the release's CIFAR-10 random-10 % setting.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from scissorhands_jax import _repair as repairing
from scissorhands_jax import _trim as trimming
from scissorhands_jax._calibration import calibrate_temperature, check_calibration
from scissorhands_jax._precision import with_precision
from scissorhands_jax._reinit import Eligibility, PathPredicate, resolve_eligibility
from scissorhands_jax._settings import (
    CalibrationSettings,
    ProjectionSettings,
    RepairSettings,
    TrainingSettings,
    TrimSettings,
    from_flat,
)
from scissorhands_jax._types import BatchSource, Mask, ModelState, Params, PRNGKey
from scissorhands_jax.data.batching import array_source
from scissorhands_jax.models.adapters import Model, bind_state, check_data, check_params


class ScissorhandsResult(NamedTuple):
    """What :func:`scissorhands` returns.

    Attributes:
      params: the unlearned parameters.
      model_state: the model state after repair (BatchNorm statistics).
      mask: bool tree, True where an entry was re-initialised (selection within the
        eligible leaves).
      log: one dict per repair epoch (see :func:`repair`), after a ``"trim"`` entry;
        with a calibration, a last ``"calibration"`` entry (see
        :func:`~scissorhands_jax._calibration.calibrate_temperature`).
    """

    params: Params
    model_state: ModelState
    mask: Mask
    log: list[dict[str, Any]]


def as_source(data: Any, batch_size: int, name: str) -> BatchSource:
    """``data`` as a shuffled :data:`BatchSource` (a source is passed through).

    Raises:
      ValueError: empty arrays.
    """
    if callable(data):
        return data
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(data)}
    if not sizes or sizes == {0}:
        raise ValueError(
            f"the {name} set is empty; "
            + (
                "unlearning needs at least one forget example."
                if name == "forget"
                else "a forget set equal to the whole training set leaves nothing to retain "
                "(train a new model instead)."
            )
        )
    return array_source(data, batch_size, shuffle=True)


def check_settings(**flat: Any) -> dict[str, Any]:
    """The settings objects from their names (see :func:`~scissorhands_jax._settings.from_flat`);
    raises ValueError for settings :func:`scissorhands` cannot run, before any work."""
    return from_flat(**{k: v for k, v in flat.items() if k != "eligible"})


def scissorhands(
    model: Model,
    params: Params,
    model_state: ModelState | None = None,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    eligible: PathPredicate | str | Eligibility | None = None,
    trim: TrimSettings = TrimSettings(),
    repair: RepairSettings = RepairSettings(),
    projection: ProjectionSettings = ProjectionSettings(),
    training: TrainingSettings = TrainingSettings(),
    calibration: CalibrationSettings = CalibrationSettings(),
    calibration_data: Any = None,
    eval_fn: Callable[[Params, ModelState], dict[str, float]] | None = None,
) -> ScissorhandsResult:
    r"""Unlearns the forget set: trim (:func:`~scissorhands_jax.trim`), then repair
    (:func:`~scissorhands_jax.repair`).

    1. :math:`s = |\theta \odot \sum_b |\nabla L(\theta; b)||` on ``prune_num`` fresh
       forget batches; the top :math:`N - \lfloor\text{sparsity}\cdot N\rfloor` scores
       over all parameters (:math:`s > \tau`, :math:`\tau` the
       :math:`\lfloor\text{sparsity}\cdot N\rfloor`-th smallest, equal scores at
       :math:`\tau` ranked by position; ``trim.ties``) in eligible leaves are
       re-initialised (biases to 0).
    2. ``epochs`` of SGD on :math:`L_r - \lambda L_f` with the GEM projection against
       :math:`\nabla[-L_f]` memories refreshed every epoch.
    3. Opt-in, not part of the published method (``calibration.calibration="temperature"``):
       the logits are divided by one temperature fitted so that the mean logit-scaled
       confidence of the true class on ``calibration_data`` is the original model's
       (:func:`~scissorhands_jax._calibration.calibrate_temperature`).

    Args:
      model: a :class:`Model` (from :func:`linen_model` or :func:`nnx_model`).
      params: the trained parameters (not modified). To run data-parallel, place them
        on a mesh first (``shs.parallel.on_mesh(params, mesh)``, or ``shard=True`` to
        split large leaves): every batch is then split over its data axis, and N devices
        give the one-device result on the same global batches up to float round-off.
      model_state: model state (``{}`` or None when there is none).
      retain: retain data: a pytree of arrays with a leading example axis, or a
        :data:`BatchSource`.
      forget: forget data, likewise.
      key: PRNG key; the run is a pure function of it.
      eligible: which leaves may be re-initialised and projected: a path predicate, a
        regex, a preset name of :data:`PRESETS`, None for all non-normalisation leaves,
        or an :class:`Eligibility` with separate re-init and projection leaves (e.g.
        :func:`release_bn_parity`).
      trim: sparsity, saliency batches, fresh values, saliency mode.
      repair: learning rate, epochs, :math:`\lambda`, momentum, weight decay.
      projection: the memory and the projection.
      training: batch size, progress bars and the repair's compute precision (its
        steps and memories; the saliency stays float32, so the selection of the entries
        to re-initialise does not depend on it).
      calibration: what happens to the outputs after the repair (default: nothing).
      calibration_data: held-out data for ``calibration``, never trained on (a dict
        holding the model's inputs and labels, or a batch source); None: the
        retain set, on which the original and a retrained model were both trained.
        Read only with a calibration.
      eval_fn: ``eval_fn(params, model_state) -> dict`` logged after every epoch.

    Returns:
      A :class:`ScissorhandsResult`.

    Raises:
      ValueError: before any work: empty retain or forget data, data the model cannot
        read (a missing entry, labels that are not integers in ``[0, num_classes)``,
        NaN or inf values; a :data:`BatchSource` is checked on its first batch), a
        parameter leaf that is not a float array, ``eligible`` of another type, an
        invalid regex or no eligible leaf; with a calibration, ``calibration_data``
        without the model's inputs or a model without a linear head.
      TypeError: a settings argument that is not its dataclass.
      FloatingPointError: a non-finite loss during saliency, memory or repair, or a
        diverging repair (at the step it happens, naming the cause).
    """
    model_state = {} if model_state is None else model_state
    _check_settings(trim=trim, repair=repair, projection=projection, training=training,
                    calibration=calibration)  # fmt: skip
    original_params, original_state = params, model_state
    bs = training.batch_size
    forget_src = as_source(forget, bs, "forget")
    retain_src = as_source(retain, bs, "retain")
    check_params(params)
    reinit_tree, protect_tree = resolve_eligibility(params, eligible)
    check_data(model, params, model_state, {"forget": forget, "retain": retain})
    if calibration.calibration != "none":
        check_calibration(model, params, model_state,
                          retain if calibration_data is None else calibration_data)  # fmt: skip
    k_trim, k_repair = jax.random.split(key)
    start = time.perf_counter()
    trimmed = _trim_classifier(model, params, model_state, forget_src, k_trim, reinit_tree, trim)
    if trim.update_stats:
        model_state = _moved_stats(model, params, model_state, trimmed.batches)
    n_reinit = int(sum(np.sum(m) for m in jax.device_get(jax.tree.leaves(trimmed.mask))))
    trim_entry = {"epoch": "trim", "reinitialised": n_reinit, "time_s": time.perf_counter() - start}
    new_params, new_state, log = repairing.repair(
        with_precision(model.loss, training.precision),
        trimmed.params,
        model_state,
        retain=retain_src,
        forget=forget_src,
        key=k_repair,
        eligible=protect_tree,
        settings=repair,
        projection=projection,
        eval_fn=eval_fn,
        progress=training.progress,
    )
    if calibration.calibration == "temperature":
        new_params, info = calibrate_temperature(
            model,
            new_params,
            new_state,
            original_params=original_params,
            original_state=original_state,
            data=retain if calibration_data is None else calibration_data,
        )
        log.append({"epoch": "calibration", **info})
    return ScissorhandsResult(new_params, new_state, trimmed.mask, [trim_entry, *log])


def _check_settings(**settings: Any) -> None:
    """Raises TypeError unless each settings argument is its dataclass (whose own checks
    ran when it was built)."""
    classes = (TrimSettings, RepairSettings, ProjectionSettings, TrainingSettings,
               CalibrationSettings)  # fmt: skip
    for (name, value), cls in zip(settings.items(), classes, strict=True):
        if not isinstance(value, cls):
            raise TypeError(
                f"{name} must be a {cls.__name__}, got {value!r}; e.g. "
                f"{name}=shs.{cls.__name__}(...); settings by name (a config's unlearn "
                "section) are built by scissorhands_jax._settings.from_flat."
            )


def _trim_classifier(model, params, model_state, forget, key, eligible, settings):
    loss_fn = bind_state(model, model_state, train=settings.saliency_train_mode)
    fresh = trimming.fresh_values(settings.reinit, params, lambda k: model.init(k)[0])
    return trimming.trim(loss_fn, params, forget, key=key, eligible=eligible, fresh=fresh,
                settings=settings)  # fmt: skip


def _moved_stats(model, params, model_state, batches):
    """The model state after the saliency's training-mode forward passes (the release's
    BatchNorm running statistics move on the forget batches)."""
    for batch in batches:
        model_state = _forward_train(model.loss, params, model_state, batch)
    return model_state


@functools.partial(jax.jit, static_argnames="loss")
def _forward_train(loss, params, model_state, batch):
    return loss(params, model_state, batch, True)[1]
