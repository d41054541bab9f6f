"""The audit's statistics: one row of scores from a method's and Retrain's outputs.

:func:`method_row` turns the stacked logits of a population (K models, each having
forgotten its part of the candidate set) and of its retrains into the audit's scores:
U-LiRA's balanced accuracy, the ε-based forgetting quality of the NeurIPS 2023 challenge,
UA / RA / TA, the confidence shifts that tell an under-confident model from one that forgot
too much, and the intervals of each (:mod:`scissorhands_jax.experiment.audit` describes the
attack and its references).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scissorhands_jax import metrics as M
from scissorhands_jax.experiment.protocol import Population
from scissorhands_jax.experiment.report import NULL_LEVEL, REFERENCE


def _accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-model accuracy (percent) over the examples where ``mask`` (K, N) holds."""
    right = np.argmax(logits, axis=-1) == labels[None, :]
    return 100.0 * (right & mask).sum(1) / np.maximum(mask.sum(1), 1)


def _finite(values) -> list[float]:
    # an interpolated quantile between a finite and an infinite value is NaN: it is inf
    return [float(v) if not np.isnan(v) else float("inf") for v in values]


def _valid(scores: np.ndarray) -> np.ndarray:
    return scores[~np.isnan(scores)]


ATTACK = {"exclude_partner": True, "fixed_variance": False}
"""How the audit fits U-LiRA's Gaussians: without the target's complementary partner
and with per-example variances (see ``docs/metrics.md`` for the measurement)."""


def _ulira_null(phi_r: np.ndarray, data: Population, cand, *, seed, num_samples) -> dict:
    """The design's null from Retrain's outputs: pair roles flipped at random."""
    null = M.ulira_null(
        phi_r[:, cand],
        data.forgets[:, cand],
        data.unseen[:, cand],
        num_samples=num_samples,
        seed=seed,
        **ATTACK,
    )
    low, high, bound = np.quantile(null, [0.025, 0.975, NULL_LEVEL])
    return {
        "ulira_null_mean": float(null.mean()),
        "ulira_null_range": [float(low), float(high)],
        "ulira_null_bound": float(bound),
    }


def _candidate_intervals(attack, phi_u, phi_r, data, cand, eps, boot) -> dict[str, Any]:
    """Uncertainty of the candidate-level scores.

    U-LiRA's accuracy is a mean of decisions, one per (model, candidate): its interval
    resamples model pairs and candidates at once, and the leave-one-pair-out jackknife
    refits the attack without each pair. ε is estimated from the models' outputs
    themselves (a threshold scan over each candidate's sample), and a resample of models
    with replacement would feed it tied duplicates: its intervals stay over candidates,
    with a leave-one-pair-out jackknife of the forget quality for the models' share.
    """
    s_u, s_r = attack["scores_unlearned"][:, cand], attack["scores_retrained"][:, cand]
    forgot, unseen = data.forgets[:, cand], data.unseen[:, cand]
    phi_u, phi_r = phi_u[:, cand], phi_r[:, cand]
    pairs = data.members.shape[0] // 2

    def accuracy(groups, columns):  # decisions of the resampled models on resampled candidates
        rows = M.pair_rows(groups)[:, None]
        return M.balanced_accuracy(_valid(s_u[rows, columns]), _valid(s_r[rows, columns]))

    def refitted(groups):  # the whole attack again, without the left-out pair
        rows = M.pair_rows(groups)
        return M.ulira(phi_u[rows], forgot[rows], phi_r[rows], unseen[rows], **ATTACK)["accuracy"]

    u_obs, r_obs = np.where(forgot, phi_u, np.nan), np.where(unseen, phi_r, np.nan)

    def quality_without(groups):
        rows = M.pair_rows(groups)
        return M.forget_quality(M.challenge_epsilon(u_obs[rows], r_obs[rows]))

    def candidates_only(su, sr):  # examples along axis 0
        return M.balanced_accuracy(_valid(su), _valid(sr))

    def jackknife(statistic):  # two pairs left leave no model to fit without the target's
        return M.jackknife_se(statistic, pairs) if pairs >= 3 else None

    with np.errstate(invalid="ignore"):  # quantiles of infinite values: inf - inf
        eps_ci = M.bootstrap_ci(eps, np.median, **boot)[1:]
    return {
        "ulira_accuracy_ci": list(M.two_way_bootstrap_ci(accuracy, pairs, cand.size, **boot)[1:]),
        "ulira_accuracy_se": jackknife(refitted),
        "ulira_accuracy_ci_candidates": list(
            M.bootstrap_ci((s_u.T, s_r.T), candidates_only, **boot)[1:]
        ),
        "epsilon_ci": _finite(eps_ci),
        "forget_quality_ci": list(M.bootstrap_ci(eps, M.forget_quality, **boot)[1:]),
        "forget_quality_se": jackknife(quality_without),
    }


def _mean_confidence(logits, labels, mask=None) -> float:
    phi = M.logit_confidence(logits, labels[None, :])
    return float(phi.mean() if mask is None else phi[mask].mean())


def method_row(
    protocol: str,
    method: str,
    outputs: dict[str, np.ndarray],
    retrain: dict[str, np.ndarray],
    data: Population,
    *,
    seed: int = 0,
    num_bootstrap: int = 1000,
) -> dict[str, Any]:
    """One ``audit.json`` row from a method's and Retrain's stacked outputs.

    U-LiRA and the ε-based forgetting quality use the candidate examples: the method's
    outputs where model k forgot x, against Retrain's where model k never saw x. U-LiRA's
    Gaussians leave out the target model and its complementary partner (:data:`ATTACK`).
    ε comes from threshold attacks in both directions (a method that makes forget examples
    *less* confident than Retrain does is caught too); ``forget_quality_one_sided`` uses
    the competition's one-directional attacks only. ``epsilon`` is the median of the
    per-example ε (with few models an attack often separates the two samples completely,
    and that example's ε is infinite, so the mean would say nothing). Forget quality and
    the challenge score saturate below 1 with the number of models (Retrain scored
    against itself stays far from 1), so ``forget_quality_rel`` and
    ``challenge_score_rel`` divide them by Retrain's own at the same K. UA, RA and TA are
    means over the K models of 100 − accuracy on each model's forget set, accuracy on
    its retain set and on the test set.

    Intervals (``*_ci``) are 95 % percentile bootstraps: over model pairs and candidates
    at once for U-LiRA (``ulira_accuracy_ci_candidates``: candidates only, models
    fixed), over candidates for ε and the forget quality, over models for accuracy;
    ``ulira_accuracy_se`` and ``forget_quality_se`` are leave-one-pair-out jackknife
    standard errors (None with fewer than three pairs). ``confidence_test`` and
    ``confidence_forget`` are the mean logit-confidence (``metrics.logit_confidence``) on
    the test set and on each model's forget set, ``*_shift`` the same minus Retrain's:
    a model that is under-confident everywhere moves the attack as much as one that
    forgot too much, and only the test shift tells them apart. Retrain's row adds the
    pair-flip null of the attack (``ulira_null_*``, see
    :func:`scissorhands_jax.experiment.report.sanity`).
    """
    labels = data.pool["label"]
    cand = np.flatnonzero(data.candidates)
    phi_u = M.logit_confidence(outputs["pool"], labels[None, :])
    phi_r = M.logit_confidence(retrain["pool"], labels[None, :])
    attack = M.ulira(phi_u, data.forgets, phi_r, data.unseen, **ATTACK)
    unlearned_obs = np.where(data.forgets, phi_u, np.nan)[:, cand]
    retrained_obs = np.where(data.unseen, phi_r, np.nan)[:, cand]
    eps = M.challenge_epsilon(unlearned_obs, retrained_obs)
    # The competition's own attacks threshold in one direction only; they miss a method
    # that overshoots (forget examples less confident than under Retrain), which then
    # scores better than Retrain itself. Reported beside, not instead.
    eps_one_sided = M.challenge_epsilon(unlearned_obs, retrained_obs, two_sided=False)
    forgot_by_retrain = np.where(data.forgets, phi_r, np.nan)[:, cand]
    quality_ref = M.forget_quality(M.challenge_epsilon(forgot_by_retrain, retrained_obs))
    ua = 100.0 - _accuracy(outputs["pool"], labels, data.forgets)
    ra = _accuracy(outputs["pool"], labels, data.retains)
    everything = np.ones(outputs["test"].shape[:2], bool)
    ta = _accuracy(outputs["test"], data.test["label"], everything)
    ra_ref = _accuracy(retrain["pool"], labels, data.retains).mean()
    ta_ref = _accuracy(retrain["test"], data.test["label"], everything).mean()
    quality = M.forget_quality(eps)
    score = M.challenge_score(quality, ra.mean(), ra_ref, ta.mean(), ta_ref)
    boot = {"seed": seed, "num_samples": num_bootstrap}
    row = {
        "protocol": protocol,
        "method": method,
        "n_models": int(data.members.shape[0]),
        "n_candidates": int(cand.size),
        "ulira_accuracy": float(attack["accuracy"]),
        "ulira_auc": float(attack["auc"]),
        "epsilon": float(np.median(eps)),
        "forget_quality": float(quality),
        "forget_quality_rel": float(quality / quality_ref),
        "forget_quality_one_sided": M.forget_quality(eps_one_sided),
        "challenge_score": score,
        "challenge_score_rel": float(score / quality_ref),  # Retrain's score is its quality
        **_candidate_intervals(attack, phi_u, phi_r, data, cand, eps, boot),
    }
    for name, values in (("UA", ua), ("RA", ra), ("TA", ta)):
        row[name] = float(values.mean())
        row[f"{name}_ci"] = list(M.bootstrap_ci(values, **boot)[1:])
    confidence = {
        "test": [_mean_confidence(o["test"], data.test["label"]) for o in (outputs, retrain)],
        "forget": [_mean_confidence(o["pool"], labels, data.forgets) for o in (outputs, retrain)],
    }
    for part, (mine, ref) in confidence.items():
        row[f"confidence_{part}"], row[f"confidence_{part}_shift"] = mine, mine - ref
    if method == REFERENCE:
        row.update(_ulira_null(phi_r, data, cand, seed=seed, num_samples=num_bootstrap))
    return row
