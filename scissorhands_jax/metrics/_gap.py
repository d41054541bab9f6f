"""One evaluation row (UA, RA, TA, MIA) and its average gap to Retrain.

Unlearning is judged by how closely a method's row matches the row of a model
retrained from scratch on the retain set; the Avg. Gap summarises that distance
(Fan et al., SalUn, ICLR 2024; Wu & Harandi, Scissorhands, ECCV 2024).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from scissorhands_jax.metrics._accuracy import accuracy
from scissorhands_jax.metrics._mia import svc_attack_auc, svc_mia


def avg_gap(
    row: Mapping[str, float],
    reference: Mapping[str, float],
    keys: Sequence[str] = ("UA", "RA", "TA", "MIA_entropy"),
) -> float:
    r"""Mean absolute difference between a method's metrics and a reference row.

    .. math::

        \mathrm{Avg.\ Gap} = \frac{1}{|K|} \sum_{k \in K}
            \left| \mathrm{row}_k - \mathrm{reference}_k \right|

    with :math:`K` = ``keys``; the reference is normally Retrain. Lower is better.

    Example:
        >>> avg_gap({"UA": 5.0, "RA": 99.0}, {"UA": 8.0, "RA": 100.0}, keys=("UA", "RA"))
        2.0

    Args:
        row: Metrics of the method, e.g. the output of :func:`classification_metrics`.
        reference: Metrics of the reference model (Retrain).
        keys: Which metrics to average over.

    Returns:
        The average gap as a Python float.

    Raises:
        KeyError: If a key is missing from ``row`` or ``reference``.
        ValueError: If ``keys`` is empty.
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("avg_gap needs at least one metric key; got none.")
    for name, mapping in (("row", row), ("reference", reference)):
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise KeyError(f"{name} is missing metric(s) {missing}; it has {sorted(mapping)}.")
    gaps = [abs(float(row[k]) - float(reference[k])) for k in keys]
    return float(np.mean(gaps))


def classification_metrics(
    *,
    forget_probs: ArrayLike,
    forget_labels: ArrayLike,
    retain_probs: ArrayLike,
    retain_labels: ArrayLike,
    test_probs: ArrayLike,
    test_labels: ArrayLike,
) -> dict[str, float]:
    """The evaluation row of the paper's classification tables.

    - ``UA`` (unlearning accuracy) = 100 - accuracy on the forget set.
    - ``RA`` = accuracy on the retain set; ``TA`` = accuracy on the test set.
    - ``MIA_entropy`` / ``MIA_confidence`` = :func:`svc_mia` with the entropy or
      confidence feature.
    - ``MIA_entropy_attack_auc`` / ``MIA_confidence_attack_auc`` = :func:`svc_attack_auc`:
      whether that attack can tell members from non-members at all (0.5: it cannot, and
      its MIA value is noise).

    For class-wise forgetting, pass a test set from which the forgotten class has
    already been removed; this function does not know which classes were forgotten.

    Args:
        retain_probs, retain_labels, test_probs, test_labels, forget_probs,
            forget_labels: the softmax outputs ``(n, C)`` and labels ``(n,)`` of the
            three sets, as for :func:`svc_mia`.

    Returns:
        A dict with keys ``UA``, ``RA``, ``TA``, ``MIA_entropy`` and
        ``MIA_confidence`` (Python floats in percent) and the two attacks' held-out AUCs
        ``MIA_entropy_attack_auc``, ``MIA_confidence_attack_auc`` (in ``[0, 1]``).

    Raises:
        ValueError: If any set is empty or shapes, labels or probabilities are
            invalid (see :func:`accuracy` and :func:`svc_mia`).
    """
    return accuracies_and_mias(
        ("entropy", "confidence"),
        forget_probs=forget_probs,
        forget_labels=forget_labels,
        retain_probs=retain_probs,
        retain_labels=retain_labels,
        test_probs=test_probs,
        test_labels=test_labels,
    )


def accuracies_and_mias(features: tuple[str, ...], **sets: ArrayLike) -> dict[str, float]:
    """``UA``, ``RA``, ``TA`` and, per feature, ``MIA_<feature>`` (:func:`svc_mia`) and
    ``MIA_<feature>_attack_auc`` (:func:`svc_attack_auc`) from the six keyword arrays
    of :func:`classification_metrics`."""
    row = {
        "UA": 100.0 - accuracy(sets["forget_probs"], sets["forget_labels"]),
        "RA": accuracy(sets["retain_probs"], sets["retain_labels"]),
        "TA": accuracy(sets["test_probs"], sets["test_labels"]),
    }
    shadow = {k: v for k, v in sets.items() if not k.startswith("forget")}
    for feature in features:
        row[f"MIA_{feature}"] = svc_mia(**sets, feature=feature)
        row[f"MIA_{feature}_attack_auc"] = svc_attack_auc(**shadow, feature=feature)
    return row
