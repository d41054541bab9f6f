"""The SVC membership-inference attack used to score unlearning (MIA-efficacy).

An attacker sees only a model's softmax outputs. From each output it builds a small
feature (correctness, confidence, entropy, modified entropy or the whole vector), learns
with a support-vector classifier to tell training members from held-out non-members,
and is then asked about the forget set. The more forget examples it calls
"non-member", the better the model has forgotten them.

This follows the evaluation of SalUn (Fan et al., "SalUn: Empowering Machine
Unlearning via Gradient-based Weight Saliency in Both Image Classification and
Generation", ICLR 2024), which Scissorhands (Wu & Harandi, ECCV 2024) reuses; the
modified entropy is from Song & Mittal, "Systematic Evaluation of Privacy Risks of
Machine Learning Models", USENIX Security 2021.

All logarithms here are taken of probabilities clipped to ``[1e-30, 1]`` (see
``_LOG_FLOOR``) so that exact zeros and ones, common after a float32 softmax, give
finite features; a probability of exactly 0 then contributes ``0 * log(1e-30) = 0`` to
the entropy, its limit value.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC

from scissorhands_jax.metrics._accuracy import check_shapes

MIA_FEATURES = ("correctness", "confidence", "entropy", "modified_entropy", "probabilities")
"""The per-example features a membership attack can read (see :func:`mia_features`)."""

INFORMATIVE_ATTACK_AUC = 0.55
"""Below this held-out AUC an SVC attack is reported as uninformative: it cannot tell its
own members from non-members, so its verdict on the forget set is noise."""

# Floor for the argument of every log; 1e-30 matches the SalUn evaluation code and is
# far below any probability a float32 softmax can represent apart from exact zero.
_LOG_FLOOR = 1e-30
# Slack allowed outside [0, 1] before inputs are rejected as "not probabilities".
_PROB_TOLERANCE = 1e-6


def safe_log(x: np.ndarray) -> np.ndarray:
    return np.log(np.clip(x, _LOG_FLOOR, 1.0))


def check_probs_labels(
    probs: ArrayLike, labels: ArrayLike, name: str, *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validates one set of softmax outputs and labels and returns them as NumPy."""
    probs, labels = check_shapes(
        np.asarray(probs, dtype=np.float64), labels, f"{name} probabilities", f"{name} labels"
    )
    if probs.shape[0] == 0:
        if allow_empty:
            return probs, labels.astype(np.int64)
        raise ValueError(f"the {name} set is empty; the attack needs at least one example.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} labels must be integers; got dtype {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(
            f"{name} labels must lie in [0, {probs.shape[1]}); "
            f"got values in [{labels.min()}, {labels.max()}]."
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{name} probabilities contain NaN or infinity.")
    if probs.min() < -_PROB_TOLERANCE or probs.max() > 1.0 + _PROB_TOLERANCE:
        raise ValueError(
            f"{name} probabilities must lie in [0, 1] (pass softmax outputs, not logits); "
            f"got values in [{probs.min()}, {probs.max()}]."
        )
    return probs, labels


def mia_features(probs: ArrayLike, labels: ArrayLike, kind: str) -> np.ndarray:
    r"""Per-example attack features computed from softmax outputs.

    With :math:`p` a row of ``probs`` and :math:`y` its label:

    - ``"correctness"``: :math:`\mathbb{1}[\arg\max_i p_i = y]` (1.0 or 0.0).
    - ``"confidence"``: :math:`p_y`.
    - ``"entropy"``:

      .. math:: H(p) = -\sum_i p_i \log p_i

    - ``"modified_entropy"`` (Song & Mittal, USENIX Security 2021, Eq. 4):

      .. math::

          \mathrm{Mentr}(p, y) = -(1 - p_y) \log p_y
              - \sum_{i \ne y} p_i \log(1 - p_i)

    - ``"probabilities"``: the whole vector :math:`p`.

    Arguments of the logs are clipped to ``[1e-30, 1]`` so that exact 0 and 1 give
    finite values (a zero probability adds nothing to the entropy).

    Example:
        >>> mia_features([[0.5, 0.5], [0.9, 0.1]], [0, 1], "confidence").ravel().tolist()
        [0.5, 0.1]

    Args:
        probs: Softmax outputs of shape ``(n, C)``.
        labels: Integer labels in ``[0, C)`` of shape ``(n,)``.
        kind: One of :data:`MIA_FEATURES`.

    Returns:
        A float64 array of shape ``(n, 1)``, or ``(n, C)`` for ``"probabilities"``
        (``n`` may be 0).

    Raises:
        ValueError: If ``kind`` is unknown, or if the shapes, label values or
            probability values are invalid.
    """
    if kind not in MIA_FEATURES:
        raise ValueError(f"unknown MIA feature {kind!r}; expected one of {MIA_FEATURES}.")
    probs, labels = check_probs_labels(probs, labels, "input", allow_empty=True)
    rows = np.arange(probs.shape[0])
    if kind == "correctness":
        feature = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
    elif kind == "confidence":
        feature = probs[rows, labels]
    elif kind == "entropy":
        feature = -np.sum(probs * safe_log(probs), axis=-1)
    elif kind == "modified_entropy":
        # Wrong classes contribute p_i log(1 - p_i); the true class (1 - p_y) log p_y.
        terms = probs * safe_log(1.0 - probs)
        p_true = probs[rows, labels]
        terms[rows, labels] = (1.0 - p_true) * safe_log(p_true)
        feature = -np.sum(terms, axis=-1)
    else:  # "probabilities"
        return probs.copy()
    return feature.reshape(-1, 1)


def svc_mia(
    *,
    retain_probs: ArrayLike,
    retain_labels: ArrayLike,
    test_probs: ArrayLike,
    test_labels: ArrayLike,
    forget_probs: ArrayLike,
    forget_labels: ArrayLike,
    feature: str = "entropy",
) -> float:
    r"""MIA-efficacy: how much of the forget set an SVC attack calls "non-member".

    The attack of the SalUn evaluation (Fan et al., ICLR 2024), reused by
    Scissorhands. Members are the first ``len(test)`` examples of the retain set, in
    the order given (all of it if it is shorter); non-members are the test set. An
    ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` is fit on their features
    (label 1 for members, 0 for non-members) and then predicts the forget set:

    .. math::

        \mathrm{MIA} = \frac{100}{|D_f|} \sum_{x \in D_f}
            \mathbb{1}\left[\mathrm{SVC}(\phi(x)) = 0\right]

    where :math:`\phi` is :func:`mia_features` of kind ``feature``. The fit is
    deterministic, so equal inputs give equal scores.

    Args:
        retain_probs: Softmax outputs on the retain set, shape ``(n_r, C)``.
        retain_labels: Labels of the retain set, shape ``(n_r,)``.
        test_probs: Softmax outputs on the test set, shape ``(n_t, C)``.
        test_labels: Labels of the test set, shape ``(n_t,)``.
        forget_probs: Softmax outputs on the forget set, shape ``(n_f, C)``.
        forget_labels: Labels of the forget set, shape ``(n_f,)``.
        feature: Which of :data:`MIA_FEATURES` the attack sees.

    Returns:
        The percentage (0-100) of forget examples predicted non-member, as a float.

    Raises:
        ValueError: If ``feature`` is unknown, a set is empty, shapes disagree, the
            sets have different numbers of classes, or the inputs are not
            probabilities with integer labels in range.
    """
    if feature not in MIA_FEATURES:
        raise ValueError(f"unknown MIA feature {feature!r}; expected one of {MIA_FEATURES}.")
    retain_probs, retain_labels = check_probs_labels(retain_probs, retain_labels, "retain")
    test_probs, test_labels = check_probs_labels(test_probs, test_labels, "test")
    forget_probs, forget_labels = check_probs_labels(forget_probs, forget_labels, "forget")
    num_classes = {
        "retain": retain_probs.shape[1],
        "test": test_probs.shape[1],
        "forget": forget_probs.shape[1],
    }
    if len(set(num_classes.values())) != 1:
        raise ValueError(f"all sets must have the same number of classes; got {num_classes}.")

    x_shadow, y_shadow = _shadow_set(retain_probs, retain_labels, test_probs, test_labels, feature)
    attack = _svc().fit(x_shadow, y_shadow)
    predicted = attack.predict(mia_features(forget_probs, forget_labels, feature))
    return float(100.0 * np.mean(predicted == 0))


def _svc() -> SVC:
    return SVC(C=3, gamma="auto", kernel="rbf")


def _shadow_set(retain_probs, retain_labels, test_probs, test_labels, feature):
    """Features and member labels of the attack's training set: members (1) are the first
    ``len(test)`` retain examples, non-members (0) the test set."""
    n_members = min(len(test_labels), len(retain_labels))
    members = mia_features(retain_probs[:n_members], retain_labels[:n_members], feature)
    non_members = mia_features(test_probs, test_labels, feature)
    x = np.concatenate([members, non_members], axis=0)
    y = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    return x, y


def svc_attack_auc(
    *,
    retain_probs: ArrayLike,
    retain_labels: ArrayLike,
    test_probs: ArrayLike,
    test_labels: ArrayLike,
    feature: str = "entropy",
) -> float:
    r"""The SVC attack's own validity: its AUC for members vs non-members it did not see.

    :func:`svc_mia` trusts an attack that may have learned nothing. This function asks the
    same attack (same members: the first ``len(test)`` retain examples; non-members: the
    test set; same SVC and features) to separate members from non-members on data held
    out from its fit. The shadow set is split into two halves that keep the member share
    (alternate members and alternate non-members, in the given order); an SVC is fit on
    each half and scored (``decision_function``) on the other, and the AUC is computed
    over all held-out scores (two-fold cross-fitting):

    .. math::

        \mathrm{AUC} = P\left[s(x_{\mathrm{member}}) > s(x_{\mathrm{non\text{-}member}})\right]
            + \tfrac12 P\left[s(x_{\mathrm{member}}) = s(x_{\mathrm{non\text{-}member}})\right]

    0.5 means the attack cannot tell members from non-members, and then its
    MIA-efficacy on the forget set is noise; values below :data:`INFORMATIVE_ATTACK_AUC`
    are reported as uninformative.

    Args:
        retain_probs: Softmax outputs on the retain set, shape ``(n_r, C)``, in the order
            that :func:`svc_mia` uses (its first ``len(test)`` rows are the members).
        retain_labels: Labels of the retain set, shape ``(n_r,)``.
        test_probs: Softmax outputs on the test set, shape ``(n_t, C)``.
        test_labels: Labels of the test set, shape ``(n_t,)``.
        feature: Which of :data:`MIA_FEATURES` the attack sees.

    Returns:
        The held-out AUC in ``[0, 1]`` as a float.

    Raises:
        ValueError: If ``feature`` is unknown, inputs are invalid, or either side has
            fewer than 2 examples (no held-out half to score).
    """
    if feature not in MIA_FEATURES:
        raise ValueError(f"unknown MIA feature {feature!r}; expected one of {MIA_FEATURES}.")
    retain_probs, retain_labels = check_probs_labels(retain_probs, retain_labels, "retain")
    test_probs, test_labels = check_probs_labels(test_probs, test_labels, "test")
    if retain_probs.shape[1] != test_probs.shape[1]:
        raise ValueError(
            f"retain and test sets must have the same number of classes; got "
            f"{retain_probs.shape[1]} and {test_probs.shape[1]}."
        )
    x, y = _shadow_set(retain_probs, retain_labels, test_probs, test_labels, feature)
    if min(np.sum(y == 1), np.sum(y == 0)) < 2:
        raise ValueError(
            "the attack AUC needs at least 2 members and 2 non-members to hold half out; "
            f"got {int(np.sum(y == 1))} and {int(np.sum(y == 0))}."
        )
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        where = np.flatnonzero(y == label)
        fold[where] = np.arange(where.size) % 2
    scores = np.empty(len(y))
    for held in (0, 1):
        fit, out = fold != held, fold == held
        if np.unique(y[fit]).size < 2:
            raise ValueError("each half of the attack's data must hold members and non-members.")
        scores[out] = _svc().fit(x[fit], y[fit]).decision_function(x[out])
    return float(roc_auc_score(y, scores))
