"""Every metric of the comparison from one model's predictions: the evaluation suite."""

from __future__ import annotations

from collections.abc import Mapping

from numpy.typing import ArrayLike

from scissorhands_jax.metrics._gap import accuracies_and_mias, avg_gap
from scissorhands_jax.metrics._loss_mia import loss_mia
from scissorhands_jax.metrics._mia import MIA_FEATURES
from scissorhands_jax.metrics._tow import tow


def evaluation_suite(
    *,
    forget_probs: ArrayLike,
    forget_labels: ArrayLike,
    retain_probs: ArrayLike,
    retain_labels: ArrayLike,
    test_probs: ArrayLike,
    test_labels: ArrayLike,
) -> dict[str, float]:
    """UA, RA, TA, the SVC MIA with all five features, and the loss MIA (percent).

    Keys: ``UA``, ``RA``, ``TA``, ``MIA_<feature>`` for each of :data:`MIA_FEATURES`
    (:func:`svc_mia`) with its attack's held-out AUC ``MIA_<feature>_attack_auc``
    (:func:`svc_attack_auc`; 0.5 = the attack learned nothing) and ``MIA_loss``
    (:func:`loss_mia`). As in
    :func:`classification_metrics`, a class-wise request passes a test set without the
    forgotten class.

    Args:
        retain_probs, retain_labels, test_probs, test_labels, forget_probs,
            forget_labels: the softmax outputs ``(n, C)`` and labels ``(n,)`` of the
            three sets, as for :func:`classification_metrics`.

    Returns:
        A dict of Python floats.
    """
    sets = dict(
        forget_probs=forget_probs,
        forget_labels=forget_labels,
        retain_probs=retain_probs,
        retain_labels=retain_labels,
        test_probs=test_probs,
        test_labels=test_labels,
    )
    return {**accuracies_and_mias(MIA_FEATURES, **sets), "MIA_loss": loss_mia(**sets)}


def against_retrain(
    row: Mapping[str, float], reference: Mapping[str, float], *, mia_feature: str = "entropy"
) -> dict[str, float]:
    """Avg. Gap (over UA, RA, TA and ``MIA_<mia_feature>``) and ToW against Retrain.

    Args:
        row: A method's :func:`evaluation_suite` row.
        reference: Retrain's row.
        mia_feature: Which MIA enters the gap: one of :data:`MIA_FEATURES` or ``"loss"``.

    Returns:
        ``{"avg_gap": ..., "avg_gap_mia": "MIA_<mia_feature>", "ToW": ...}``: the gap, the
        name of the MIA it used, and ToW.

    Raises:
        ValueError: For an unknown ``mia_feature``.
    """
    if mia_feature not in (*MIA_FEATURES, "loss"):
        raise ValueError(
            f"unknown MIA feature {mia_feature!r} for the Avg. Gap; choose one of "
            f"{(*MIA_FEATURES, 'loss')}."
        )
    keys = ("UA", "RA", "TA", f"MIA_{mia_feature}")
    return {
        "avg_gap": avg_gap(row, reference, keys),
        "avg_gap_mia": f"MIA_{mia_feature}",
        "ToW": tow(row, reference),
    }
