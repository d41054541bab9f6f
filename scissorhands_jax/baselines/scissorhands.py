"""Scissorhands behind the common baseline interface.

Wu & Harandi, "Scissorhands: Scrub Data Influence via Connection Sensitivity in
Networks", ECCV 2024 (arXiv 2401.06187): trim by connection sensitivity, then repair
under the GEM projection (:func:`scissorhands_jax.scissorhands`).
"""

from __future__ import annotations

from typing import Any

from scissorhands_jax._types import ModelState, Params, PRNGKey
from scissorhands_jax.baselines._common import UnlearnResult, check_arrays
from scissorhands_jax.models._adapters import Model
from scissorhands_jax.scissorhands import scissorhands as _scissorhands


def scissorhands(
    model: Model,
    params: Params,
    model_state: ModelState,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    progress: bool = False,
    **hyperparameters: Any,
) -> UnlearnResult:
    """:func:`scissorhands_jax.scissorhands` with its result as an :class:`UnlearnResult`.

    Args:
      model, params, model_state, retain, forget, key, progress: as for every baseline.
      **hyperparameters: any keyword of :func:`scissorhands_jax.scissorhands`
        (``eligible``, ``sparsity``, ``lr``, ``epochs``, ``lam``, ``batch_size``, ...);
        its defaults are the release's CIFAR-10 random-10 % setting.

    Returns:
      An :class:`UnlearnResult` (the re-initialisation mask is dropped; its size is in
      the log's ``"trim"`` entry).
    """
    check_arrays(retain, "retain")
    check_arrays(forget, "forget")
    result = _scissorhands(
        model,
        params,
        model_state,
        retain=retain,
        forget=forget,
        key=key,
        progress=progress,
        **hyperparameters,
    )
    return UnlearnResult(result.params, result.model_state, result.log)
