"""Per-example likelihood-ratio attacks over model populations: LiRA and U-LiRA.

Membership inference with shadow models (Carlini et al. 2022, "Membership Inference
Attacks From First Principles"): for every example, the outputs of the models that
trained on it and of those that did not are two distributions; a target model's output
is scored by the ratio of their likelihoods. U-LiRA (Hayes et al. 2024, "Inexact
Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy") asks the
same question of unlearning: are models that trained on an example and then unlearned
it distinguishable from models that never saw it? Everything here is NumPy on arrays of
per-model, per-example statistics, shape (K, N): model k, example x.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def logit_confidence(logits: Any, labels: Any) -> np.ndarray:
    """The LiRA statistic: the logit-scaled probability of the true class.

    .. math::

        \\phi = \\log \\frac{p_y}{1 - p_y} = z_y - \\log \\sum_{j \\ne y} e^{z_j}

    with ``z = logits`` and ``y = labels``, computed from the logits (never from
    rounded probabilities), so it stays finite and exact for confident models
    (Carlini et al. 2022).

    Args:
      logits: float array (..., C), finite.
      labels: int array broadcastable to ``logits.shape[:-1]``, values in ``[0, C)``.

    Returns:
      A float64 array ``logits.shape[:-1]``.

    Raises:
      ValueError: fewer than 2 classes, non-finite logits, or labels that are not
        integers in ``[0, C)``.

    Example:
      >>> float(logit_confidence([[0.0, 0.0]], [0])[0])
      0.0
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 0 or z.shape[-1] < 2:
        raise ValueError(
            f"logit_confidence: need logits (..., C) with at least 2 classes, got {z.shape}."
        )
    if not np.all(np.isfinite(z)):
        raise ValueError("logit_confidence: the logits hold NaN or infinity.")
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"logit_confidence: labels must be integers, got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(
            f"logit_confidence: labels must lie in [0, {z.shape[-1]}), got values in "
            f"[{y.min()}, {y.max()}] (a negative label would read a class from the end)."
        )
    y = np.broadcast_to(y, z.shape[:-1])
    true = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    others = np.where(np.arange(z.shape[-1]) == y[..., None], -np.inf, z)
    top = others.max(axis=-1)
    return true - top - np.log(np.exp(others - top[..., None]).sum(axis=-1))


def _check_family(name: str, phi: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    phi, mask = np.asarray(phi, dtype=np.float64), np.asarray(mask)
    if phi.ndim != 2 or mask.shape != phi.shape or mask.dtype != bool:
        raise ValueError(
            f"{name}: need a float array (K, N) and a bool mask of the same shape, got "
            f"{phi.shape} and {mask.dtype} {mask.shape}."
        )
    if not np.all(np.isfinite(phi[mask])):
        raise ValueError(f"{name}: the statistic is not finite at some valid observations.")
    return phi, mask


class _Side:
    """Per-example sums of the valid observations of one side (one Gaussian per example),
    from which leave-one-out means and variances follow in O(K N)."""

    def __init__(self, phi: np.ndarray, mask: np.ndarray, center: np.ndarray):
        c = np.where(mask, phi - center, 0.0)  # centred: no cancellation in the sums
        self.center, self.n = center, mask.sum(axis=0)
        self.s1, self.s2 = c.sum(axis=0), (c * c).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ss = self.s2 - self.s1**2 / self.n  # within-example sum of squares
        usable = self.n >= 2
        dof = (self.n[usable] - 1).sum()
        self.global_var = ss[usable].sum() / dof if dof > 0 else np.nan

    def fit(self, removed, min_samples, min_std, fixed_variance):
        """``(mean, std)`` (K, N) of the observations left for each target ``(k, x)``:
        every pair ``(phi, mask)`` of ``removed`` takes ``phi[k, x]`` out where
        ``mask[k, x]`` (the target itself, its partner); NaN where none remains."""
        n, s1, s2 = self.n, self.s1, self.s2
        for phi, mask in removed:
            c = np.where(mask, phi - self.center, 0.0)
            n, s1, s2 = n - mask, s1 - c, s2 - c * c
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / n
            var = (s2 - n * mean**2) / (n - 1)
        mean = np.where(n >= 1, mean, np.nan)
        per_example = (n >= max(min_samples, 2)) & (not fixed_variance)
        var = np.where(per_example, var, self.global_var)
        return mean + self.center, np.maximum(np.sqrt(np.maximum(var, 0.0)), min_std)


def _log_normal(x, mean, std):
    return -np.log(std) - 0.5 * ((x - mean) / std) ** 2


def _two_family_scores(
    name, phi_a, mask_a, phi_b, mask_b, min_samples, min_std, fixed_variance, exclude_partner
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out log-likelihood ratios ``log N(phi; A) - log N(phi; B)`` of every
    valid observation of family A and of family B (NaN elsewhere).

    The target's own observation is left out of its family's fit; with
    ``exclude_partner``, rows ``k`` and ``k ^ 1`` of both families are left out of
    both fits when row ``k`` is the target."""
    phi_a, mask_a = _check_family(name, phi_a, mask_a)
    phi_b, mask_b = _check_family(name, phi_b, mask_b)
    if phi_a.shape[1] != phi_b.shape[1]:
        raise ValueError(f"{name}: the two families disagree on the number of examples.")
    if exclude_partner and (phi_a.shape[0] != phi_b.shape[0] or phi_a.shape[0] % 2):
        raise ValueError(
            f"{name}: exclude_partner needs both families to hold the same even number of "
            f"models (row k and its partner k ^ 1 trained on complementary halves), got "
            f"{phi_a.shape[0]} and {phi_b.shape[0]}; pass exclude_partner=False otherwise."
        )
    pooled = np.concatenate([np.where(mask_a, phi_a, 0), np.where(mask_b, phi_b, 0)])
    count = mask_a.sum(axis=0) + mask_b.sum(axis=0)
    center = pooled.sum(axis=0) / np.maximum(count, 1)
    families = (
        (phi_a, mask_a, _Side(phi_a, mask_a, center)),
        (phi_b, mask_b, _Side(phi_b, mask_b, center)),
    )
    partner = np.arange(phi_a.shape[0]) ^ 1
    scores = []
    for target, (phi, mask, _) in enumerate(families):
        fits = []
        for side, (phi_s, mask_s, fitted) in enumerate(families):
            removed = [(phi_s, mask_s)] if side == target or exclude_partner else []
            if exclude_partner:
                removed.append((phi_s[partner], mask_s[partner]))
            fits.append(fitted.fit(removed, min_samples, min_std, fixed_variance))
        llr = _log_normal(phi, *fits[0]) - _log_normal(phi, *fits[1])
        scores.append(np.where(mask, llr, np.nan))
    return scores[0], scores[1]


def lira_scores(
    phi: Any,
    in_mask: Any,
    out_mask: Any,
    *,
    min_samples: int = 2,
    min_std: float = 1e-3,
    fixed_variance: bool = False,
    exclude_partner: bool = False,
) -> np.ndarray:
    """Per-observation LiRA log-likelihood ratios, leaving the target model out.

    For target model ``k`` and example ``x``, Gaussians are fitted to ``phi[j, x]`` of
    the OTHER models ``j != k`` that trained on ``x`` (``in_mask``) and that did not
    (``out_mask``), and

    .. math::

        \\Lambda_{kx} = \\log \\mathcal{N}(\\phi_{kx}; \\mu_{in}, \\sigma_{in}^2)
                     - \\log \\mathcal{N}(\\phi_{kx}; \\mu_{out}, \\sigma_{out}^2)

    (Carlini et al. 2022, with per-example means). The variance rule: on each
    side, the unbiased per-example variance of the other models when at least
    ``min_samples`` (and 2) remain, else (or always, with ``fixed_variance``, LiRA's
    choice for few shadow models) that side's global variance: the within-example
    variance pooled over all examples; standard deviations are floored at ``min_std``.
    An observation with no other model on a side gets NaN.

    With ``exclude_partner``, models come in complementary pairs (rows ``2j`` and
    ``2j + 1`` trained on complementary halves, as
    :func:`scissorhands_jax.population.membership_matrix` draws them): the partner
    ``k ^ 1`` of the target always sits on the other side, and its output is correlated
    with the target's (negatively: what one model saw, the other did not), which tilts
    the test off chance (which way depends on K and the variance rule). It is then left
    out of both fits, as the target is.

    Args:
      phi: float (K, N), e.g. :func:`logit_confidence` of every model on every example.
      in_mask: bool (K, N), model k trained on example x.
      out_mask: bool (K, N), model k did not; disjoint from ``in_mask``.
      min_samples: the fewest other models on a side for a per-example variance.
      min_std: the floor of every standard deviation.
      fixed_variance: use the global variance on both sides for every example.
      exclude_partner: leave row ``k ^ 1`` out of the fits as well (K even).

    Returns:
      float (K, N): ``Lambda`` where ``in_mask | out_mask``, NaN elsewhere; positive
      means "member".
    """
    in_mask, out_mask = np.asarray(in_mask), np.asarray(out_mask)
    if in_mask.shape == out_mask.shape and np.any(in_mask & out_mask):
        raise ValueError("lira_scores: in_mask and out_mask overlap; an observation is one.")
    s_in, s_out = _two_family_scores(
        "lira_scores",
        phi,
        in_mask,
        phi,
        out_mask,
        min_samples,
        min_std,
        fixed_variance,
        exclude_partner,
    )
    return np.where(in_mask, s_in, s_out)


def _finite_scores(name: str, positive: Any, negative: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as flat float64 arrays; raises ValueError naming ``name`` unless each is
    non-empty and finite."""
    pos, neg = (np.asarray(v, dtype=np.float64).ravel() for v in (positive, negative))
    for side, x in (("positive", pos), ("negative", neg)):
        if x.size == 0:
            raise ValueError(f"{name}: need at least one {side} score, got none.")
        if not np.all(np.isfinite(x)):
            raise ValueError(
                f"{name}: the {side} scores hold {int(np.sum(~np.isfinite(x)))} NaN or "
                "infinite value(s); drop missing observations before scoring."
            )
    return pos, neg


def roc_auc(positive: Any, negative: Any) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative) + P(tie)/2.

    The Mann-Whitney statistic from mid-ranks (ties share their average rank):

    .. math::

        \\mathrm{AUC} = \\frac{R_+ - n_+ (n_+ + 1) / 2}{n_+ n_-}

    with ``R_+`` the rank sum of the positives in the pooled sample.

    Raises:
      ValueError: a side that is empty or holds NaN or infinity (drop missing
        observations before the call).

    Example:
      >>> roc_auc([3.0, 2.0], [1.0, 2.0])
      0.875
    """
    pos, neg = _finite_scores("roc_auc", positive, negative)
    pooled = np.concatenate([pos, neg])
    order = np.argsort(pooled, kind="mergesort")
    ranks = np.empty(pooled.size)
    ranks[order] = np.arange(1, pooled.size + 1)
    sorted_values = pooled[order]
    # mid-ranks: every run of equal values gets the mean of its ranks
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], pooled.size]
    mid = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def balanced_accuracy(positive: Any, negative: Any, threshold: float = 0.0) -> float:
    """``(TPR + TNR) / 2`` of the rule "positive if score > threshold".

    Raises:
      ValueError: a side that is empty or holds NaN or infinity (drop missing
        observations before the call), or a non-finite threshold.
    """
    pos, neg = _finite_scores("balanced_accuracy", positive, negative)
    if not np.isfinite(threshold):
        raise ValueError(f"balanced_accuracy: threshold must be finite, got {threshold}.")
    return float(((pos > threshold).mean() + (neg <= threshold).mean()) / 2.0)


def lira_auc(scores: Any, in_mask: Any, out_mask: Any) -> float:
    """The AUC of :func:`lira_scores` for IN (positive) against OUT observations."""
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[np.asarray(in_mask)], scores[np.asarray(out_mask)]
    return roc_auc(pos[~np.isnan(pos)], neg[~np.isnan(neg)])  # NaN: no model to compare


def lira_accuracy(scores: Any, in_mask: Any, out_mask: Any) -> float:
    """Balanced accuracy of :func:`lira_scores` at the likelihood-ratio threshold 0."""
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[np.asarray(in_mask)], scores[np.asarray(out_mask)]
    return balanced_accuracy(pos[~np.isnan(pos)], neg[~np.isnan(neg)])


def ulira(
    phi_unlearned: Any,
    forgot_mask: Any,
    phi_retrained: Any,
    unseen_mask: Any,
    *,
    min_samples: int = 2,
    min_std: float = 1e-3,
    fixed_variance: bool = False,
    exclude_partner: bool = False,
) -> dict[str, Any]:
    """U-LiRA: can a per-example likelihood-ratio test tell unlearned from retrained?

    Two model families score the same N examples: ``phi_unlearned`` (K_u, N) of models
    that trained on example x and then unlearned it (valid where ``forgot_mask``) and
    ``phi_retrained`` (K_r, N) of models that never trained on x (valid where
    ``unseen_mask``). Every valid observation is a target: Gaussians are fitted per
    example to the OTHER observations of each family (the target left out, variance rule
    as in :func:`lira_scores`), and

    .. math::

        \\Lambda = \\log \\mathcal{N}(\\phi; \\mu_u, \\sigma_u^2)
                 - \\log \\mathcal{N}(\\phi; \\mu_r, \\sigma_r^2)

    says "unlearned" when positive (Hayes et al. 2024). With perfect unlearning
    the families are one distribution and the test is at chance: ``accuracy`` = 0.5.

    In the audit's design row ``k`` of both families descends from the same model, and
    models ``2j`` and ``2j + 1`` trained on complementary halves, so where model ``k``
    forgot ``x`` its partner ``k ^ 1`` never saw it: the partner is always in the other
    family, its output anti-correlated with the target's. ``exclude_partner`` leaves rows
    ``k`` and ``k ^ 1`` of both families out of both fits when row ``k`` is the target;
    without it the attack is off 0.5 on two families of one distribution (0.48 to 0.53
    on synthetic ones with 8 to 64 models).

    Args:
      phi_unlearned: float (K_u, N), e.g. :func:`logit_confidence`.
      forgot_mask: bool (K_u, N), the observations that count.
      phi_retrained: float (K_r, N).
      unseen_mask: bool (K_r, N).
      min_samples: see :func:`lira_scores`.
      min_std: see :func:`lira_scores`.
      fixed_variance: see :func:`lira_scores`.
      exclude_partner: leave the target's row and its partner's out of both fits
        (``K_u == K_r``, even).

    Returns:
      A dict: ``accuracy`` (balanced, threshold 0), ``auc``, ``scores_unlearned``
      (K_u, N) and ``scores_retrained`` (K_r, N) (NaN where not valid), and
      ``per_example_accuracy`` (N,), the balanced accuracy on each example (NaN where an
      example lacks targets of either family).
    """
    s_u, s_r = _two_family_scores(
        "ulira",
        phi_unlearned,
        forgot_mask,
        phi_retrained,
        unseen_mask,
        min_samples,
        min_std,
        fixed_variance,
        exclude_partner,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.sum(s_u > 0, axis=0) / np.sum(~np.isnan(s_u), axis=0)
        tnr = np.sum(s_r <= 0, axis=0) / np.sum(~np.isnan(s_r), axis=0)
    return {
        "accuracy": balanced_accuracy(s_u[~np.isnan(s_u)], s_r[~np.isnan(s_r)]),
        "auc": roc_auc(s_u[~np.isnan(s_u)], s_r[~np.isnan(s_r)]),
        "scores_unlearned": s_u,
        "scores_retrained": s_r,
        "per_example_accuracy": (tpr + tnr) / 2.0,
    }


def bootstrap_ci(
    data: Any,
    statistic: Callable[..., float] = np.mean,
    *,
    axis: int = 0,
    num_samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """A percentile bootstrap confidence interval of ``statistic`` over units.

    The units (examples or models) lie along ``axis`` of ``data``, an array or a tuple of
    arrays resampled jointly (the same indices for each); each of ``num_samples``
    resamples draws as many units with replacement and evaluates
    ``statistic(*resampled)``; the interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of those values (Efron & Tibshirani 1993, Ch. 13).

    Args:
      data: an array, or a tuple of arrays sharing the length of ``axis``.
      statistic: ``statistic(*arrays) -> float``; default the mean.
      axis: the axis of the units.
      num_samples: bootstrap resamples.
      seed: the NumPy seed.
      level: the coverage, in (0, 1).

    Returns:
      ``(estimate, low, high)``, ``estimate`` the statistic of ``data`` itself.
    """
    arrays = tuple(np.asarray(a) for a in (data if isinstance(data, tuple) else (data,)))
    sizes = {a.shape[axis] for a in arrays}
    if len(sizes) != 1 or not 0 < level < 1 or num_samples < 1:
        raise ValueError(
            f"bootstrap_ci: need arrays of one length along axis {axis} (got {sizes}), "
            f"0 < level < 1 (got {level}) and num_samples >= 1 (got {num_samples})."
        )
    n = sizes.pop()
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            statistic(*(np.take(a, idx, axis=axis) for a in arrays))
            for idx in rng.integers(0, n, size=(num_samples, n))
        ]
    )
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(statistic(*arrays)), float(low), float(high)
