"""Scissorhands behind the common baseline interface.

Wu & Harandi, "Scissorhands: Scrub Data Influence via Connection Sensitivity in
Networks", ECCV 2024 (arXiv 2401.06187): trim by connection sensitivity, then repair
under the GEM projection (:func:`scissorhands_jax.scissorhands`).
"""

from __future__ import annotations

from typing import Any

from scissorhands_jax import _method as method
from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import UnlearnResult, check_data
from scissorhands_jax.models.adapters import Model


def scissorhands(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    progress: bool = False,
    eligible: Any = None,
    calibration_data: Any = None,
    **hyperparameters: Any,
) -> UnlearnResult:
    """:func:`scissorhands_jax.scissorhands` on arrays, with its settings by name, its result as an
    :class:`UnlearnResult`.

    Args:
      model, params, model_state, retain, forget, key, progress: as for every baseline.
      eligible: as for :func:`scissorhands_jax.scissorhands`.
      calibration_data: held-out data for ``calibration="temperature"``, as for
        :func:`scissorhands_jax.scissorhands` (None: the retain set).
      **hyperparameters: flat settings (``sparsity``, ``lr``, ``epochs``, ``lam``,
        ``batch_size``, ...: the fields of the settings classes); the
        defaults are the release's CIFAR-10 random-10 % setting.

    Returns:
      An :class:`UnlearnResult` (the re-initialisation mask is dropped; its size is in
      the log's ``"trim"`` entry).
    """
    check_data(retain, forget)
    settings = method.check_settings(progress=progress, **hyperparameters)
    result = method.scissorhands(
        model,
        params,
        model_state,
        retain=retain,
        forget=forget,
        key=key,
        eligible=eligible,
        calibration_data=calibration_data,
        **settings,
    )
    return UnlearnResult(result.params, result.model_state, result.log)
