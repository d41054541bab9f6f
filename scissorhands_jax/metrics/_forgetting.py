"""The forgetting quality of the NeurIPS 2023 unlearning competition.

Triantafillou et al. 2024, "Are we making progress in unlearning? Findings from the
first NeurIPS unlearning competition" (arXiv 2406.09073): unlearning is
(epsilon, delta)-unlearning when no attack tells the unlearned models' outputs on a
forget example from the outputs of models retrained without it better than
(epsilon, delta)-differential privacy allows. Per forget example, epsilon is estimated
from the false positive and false negative rates of a family of attacks, turned into a
score by bins, and averaged into the forgetting quality F; the final score multiplies F
by the utility ratios. The constants (delta = 0.01, bins of width 0.5, 13 bins) and the
handling of zero error rates follow the competition's published evaluation code.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def threshold_attack_rates(
    unlearned: Any, retrained: Any, *, two_sided: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """FPR and FNR of every single-threshold attack on one example's observations.

    Positive means "unlearned". For every distinct observed value ``t`` (of either
    sample) the attack "unlearned if output > t" has

    .. math::

        \\mathrm{FPR}(t) = \\frac{\\#\\{r > t\\}}{n_r}, \\qquad
        \\mathrm{FNR}(t) = \\frac{\\#\\{u \\le t\\}}{n_u}

    over the retrained outputs ``r`` and the unlearned outputs ``u`` (the competition's
    attack family). With ``two_sided`` (our choice, the default) the mirrored attacks
    "unlearned if output <= t", with rates ``1 - FPR(t)`` and ``1 - FNR(t)``, are added,
    so that an unlearned sample lying *below* the retrained one counts at its strength;
    the competition's one-sided family only catches that case when it is complete (both
    rates above ``1 - delta``, see :func:`challenge_epsilon`).

    Args:
      unlearned: float (n_u,), the unlearned models' outputs (NaNs dropped).
      retrained: float (n_r,), the retrained models' outputs (NaNs dropped).
      two_sided: add the mirrored attacks.

    Returns:
      ``(fpr, fnr)``, one entry per attack.
    """
    u, r = (np.asarray(v, dtype=np.float64).ravel() for v in (unlearned, retrained))
    u, r = np.sort(u[~np.isnan(u)]), np.sort(r[~np.isnan(r)])
    if u.size == 0 or r.size == 0:
        raise ValueError("threshold_attack_rates: need outputs of both model families.")
    thresholds = np.unique(np.concatenate([u, r]))
    fpr = (r.size - np.searchsorted(r, thresholds, side="right")) / r.size
    fnr = np.searchsorted(u, thresholds, side="right") / u.size
    if two_sided:
        fpr, fnr = np.concatenate([fpr, 1 - fpr]), np.concatenate([fnr, 1 - fnr])
    return fpr, fnr


def attack_epsilon(fpr: Any, fnr: Any, delta: float = 0.01) -> float:
    """The epsilon that attacks with these error rates prove, at ``delta``.

    An (epsilon, delta) guarantee bounds every attack's rates by
    ``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta`` (Kairouz et
    al. 2015), so each attack proves

    .. math::

        \\varepsilon \\ge \\max\\left(\\log\\frac{1 - \\delta - \\mathrm{FPR}}{\\mathrm{FNR}},
                                     \\log\\frac{1 - \\delta - \\mathrm{FNR}}{\\mathrm{FPR}}
                              \\right)

    and the estimate is the largest over the attacks and 0. As in the competition's
    code: an attack with FPR = FNR = 0 proves infinity; one with exactly one zero rate
    is discarded; a logarithm of a negative number is dropped, and an attack where both
    are is counted as infinity (both rates above ``1 - delta``: a reversed perfect
    attack).

    Args:
      fpr: float (m,), the attacks' false positive rates.
      fnr: float (m,), their false negative rates.
      delta: the delta of the guarantee.

    Returns:
      epsilon >= 0, possibly infinite.
    """
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    if fpr.shape != fnr.shape:
        raise ValueError(f"attack_epsilon: fpr {fpr.shape} and fnr {fnr.shape} differ.")
    if np.any((fpr == 0) & (fnr == 0)):
        return float("inf")
    keep = (fpr > 0) & (fnr > 0)
    fpr, fnr = fpr[keep], fnr[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        eps1 = np.log(1.0 - delta - fpr) - np.log(fnr)
        eps2 = np.log(1.0 - delta - fnr) - np.log(fpr)
    if np.any(np.isnan(eps1) & np.isnan(eps2)):
        return float("inf")
    both = np.fmax(eps1, eps2)  # fmax drops the NaN of one side
    return float(max(0.0, both.max(initial=0.0)))


def challenge_epsilon(
    unlearned_obs: Any, retrained_obs: Any, *, delta: float = 0.01, two_sided: bool = True
) -> np.ndarray:
    """Per-example epsilon of the competition's forgetting quality.

    Args:
      unlearned_obs: float (K_u, N): an output (e.g. the loss or
        :func:`logit_confidence`) of each unlearned model on each forget example; NaN
        marks a missing observation.
      retrained_obs: float (K_r, N): the same output of the models retrained without the
        forget set.
      delta: the delta of (epsilon, delta)-unlearning (0.01 in the competition).
      two_sided: the attack family of :func:`threshold_attack_rates`.

    Returns:
      float (N,): :func:`attack_epsilon` of each example's threshold attacks.
    """
    u, r = np.asarray(unlearned_obs, np.float64), np.asarray(retrained_obs, np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(
            f"challenge_epsilon: need (K_u, N) and (K_r, N) arrays, got {u.shape} and {r.shape}."
        )
    return np.array(
        [
            attack_epsilon(*threshold_attack_rates(u[:, x], r[:, x], two_sided=two_sided), delta)
            for x in range(u.shape[1])
        ]
    )


def forgetting_scores(eps: Any, *, bin_width: float = 0.5, num_bins: int = 13) -> np.ndarray:
    """Per-example scores ``2 / 2^n`` of the epsilon bin ``n``.

    Bin ``n`` (1-based) holds ``(n - 1) w <= eps < n w`` for ``n < B``; the last, ``n =
    B``, everything from ``(B - 1) w`` up, infinity included. So eps < 0.5 scores 1,
    each further half unit halves the score, down to ``2 / 2^13``.

    Args:
      eps: float (N,), e.g. from :func:`challenge_epsilon`; >= 0.
      bin_width: ``w``.
      num_bins: ``B``.

    Returns:
      float (N,) in ``(0, 1]``.
    """
    eps = np.asarray(eps, dtype=np.float64)
    if np.any(np.isnan(eps)) or np.any(eps < 0):
        raise ValueError("forgetting_scores: epsilons must be >= 0 (no NaN).")
    n = np.digitize(eps, np.arange(num_bins) * bin_width)
    return 2.0 / 2.0**n


def forget_quality(eps: Any, *, bin_width: float = 0.5, num_bins: int = 13) -> float:
    """The forgetting quality ``F``: the mean of :func:`forgetting_scores` over examples.

    .. math::

        F = \\frac{1}{N} \\sum_{x} \\frac{2}{2^{n(\\varepsilon_x)}}
    """
    return float(np.mean(forgetting_scores(eps, bin_width=bin_width, num_bins=num_bins)))


def challenge_score(
    forget_quality: float,
    retain_accuracy: float,
    retain_accuracy_retrain: float,
    test_accuracy: float,
    test_accuracy_retrain: float,
) -> float:
    """The competition's final score: forgetting quality times the utility ratios.

    .. math::

        F \\cdot \\frac{RA_{unlearn}}{RA_{retrain}} \\cdot \\frac{TA_{unlearn}}{TA_{retrain}}

    with retain (RA) and test (TA) accuracies of the unlearned and the retrained models
    (means over the models).
    """
    if retain_accuracy_retrain <= 0 or test_accuracy_retrain <= 0:
        raise ValueError("challenge_score: the retrained accuracies must be positive.")
    return float(
        forget_quality
        * (retain_accuracy / retain_accuracy_retrain)
        * (test_accuracy / test_accuracy_retrain)
    )
