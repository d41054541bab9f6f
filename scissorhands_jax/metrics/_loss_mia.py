"""The loss-based membership-inference attack: logistic regression on per-example losses.

A weaker, simpler attacker than the SVC of :func:`svc_mia`: it sees only the
cross-entropy loss of each example, :math:`\\ell = -\\log p_y`, and draws one threshold
with a logistic regression (Yeom, Giacomelli, Fredrikson & Jha, "Privacy Risk in
Machine Learning: Analyzing the Connection to Overfitting", CSF 2018: the loss-threshold
attack; the logistic-regression form is the one in the evaluation of SCRUB, Kurmanji et
al., NeurIPS 2023). To be read beside :func:`svc_mia` it uses the same protocol: members
= the first ``len(test)`` retain examples, non-members = the test set, and it reports the
percentage of the forget set called non-member (MIA-efficacy).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression

from scissorhands_jax.metrics._mia import check_probs_labels, safe_log

DEGENERATE_MARGIN = 1e-6
"""Below this decision value on every example it was fit on, the loss attack has learned
nothing: its verdicts are ties decided by rounding (:func:`loss_mia` refuses to score)."""


def example_losses(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    r"""Per-example cross-entropy :math:`-\log p_y`, with :math:`p_y` clipped to
    ``[1e-30, 1]`` (so an exact 0 gives 69.08, not infinity).

    Example:
        >>> example_losses([[0.5, 0.5], [0.9, 0.1]], [0, 1]).round(4).tolist()
        [0.6931, 2.3026]

    Args:
        probs: Softmax outputs of shape ``(n, C)``.
        labels: Integer labels in ``[0, C)`` of shape ``(n,)``.

    Returns:
        A float64 array of shape ``(n,)``.
    """
    probs, labels = check_probs_labels(probs, labels, "input", allow_empty=True)
    return -safe_log(probs[np.arange(probs.shape[0]), labels])


def loss_mia(
    *,
    retain_probs: ArrayLike,
    retain_labels: ArrayLike,
    test_probs: ArrayLike,
    test_labels: ArrayLike,
    forget_probs: ArrayLike,
    forget_labels: ArrayLike,
) -> float:
    r"""MIA-efficacy of a logistic-regression attack on per-example losses.

    .. math::

        \mathrm{MIA}_{\mathrm{loss}} = \frac{100}{|D_f|} \sum_{x \in D_f}
            \mathbb 1\left[\sigma(w\,\ell(x) + b) < \tfrac12\right]

    where :math:`(w, b)` are fit by ``sklearn.linear_model.LogisticRegression()`` (L2,
    C = 1, lbfgs: deterministic) on :func:`example_losses` of members (first
    ``len(test)`` retain examples, label 1) and non-members (test set, label 0).

    Args:
        retain_probs, retain_labels, test_probs, test_labels, forget_probs,
            forget_labels: the softmax outputs ``(n, C)`` and labels ``(n,)`` of the
            three sets, as for :func:`svc_mia`.

    Returns:
        The percentage (0-100) of forget examples predicted non-member.

    A degenerate attack, one whose decision value :math:`w\,\ell + b` is within
    :data:`DEGENERATE_MARGIN` of 0 on every member and non-member (the two sets'
    losses cannot be told apart at all, e.g. the same outputs on both), would call every
    forget example by the tie rule of ``predict``; that is refused rather than reported.

    Raises:
        ValueError: If a set is empty, the inputs are not probabilities with integer
            labels in range, or the attack is degenerate.
    """
    retain_probs, retain_labels = check_probs_labels(retain_probs, retain_labels, "retain")
    test_probs, test_labels = check_probs_labels(test_probs, test_labels, "test")
    forget_probs, forget_labels = check_probs_labels(forget_probs, forget_labels, "forget")
    n_members = min(len(test_labels), len(retain_labels))
    members = example_losses(retain_probs[:n_members], retain_labels[:n_members])
    non_members = example_losses(test_probs, test_labels)
    x = np.concatenate([members, non_members])[:, None]
    y = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    attack = LogisticRegression()
    attack.fit(x, y)
    margin = float(np.max(np.abs(attack.decision_function(x))))
    if margin < DEGENERATE_MARGIN:
        raise ValueError(
            "loss_mia: the attack is degenerate: members and non-members are "
            f"indistinguishable by their losses (its decision value is at most {margin:.2g} "
            "on every example it was fit on), so its verdict would be decided by rounding. "
            "No MIA-efficacy can be measured from these sets."
        )
    predicted = attack.predict(example_losses(forget_probs, forget_labels)[:, None])
    return float(100.0 * np.mean(predicted == 0))
