"""LiRA, U-LiRA, the competition's forgetting quality and the bootstrap, against
brute-force loops, SciPy and hand-computed cases."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from scipy import stats

from scissorhands_jax import metrics
from scissorhands_jax.metrics import _audit, _forgetting

# -- logit_confidence -------------------------------------------------------------------------


def test_logit_confidence_equals_log_odds_of_the_softmax():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(3, 7, 5)) * 3, rng.integers(0, 5, size=7)
    phi = metrics.logit_confidence(logits, labels)
    assert phi.shape == (3, 7)
    for k, x in itertools.product(range(3), range(7)):
        p = np.exp(logits[k, x]) / np.exp(logits[k, x]).sum()
        y = labels[x]
        np.testing.assert_allclose(phi[k, x], np.log(p[y] / (1 - p[y])), rtol=1e-10)


def test_logit_confidence_stays_exact_for_confident_models():
    # p_y rounds to 1 in float64, yet phi = 1000 - log 2 exactly
    np.testing.assert_allclose(
        metrics.logit_confidence([[1000.0, 0.0, 0.0]], [0]), [1000 - np.log(2)]
    )
    np.testing.assert_allclose(metrics.logit_confidence([[0.0, 800.0, 0.0]], [0]), [-800.0])
    with pytest.raises(ValueError, match="2 classes"):
        metrics.logit_confidence([[1.0]], [0])


# -- brute-force LiRA reference -----------------------------------------------------------------


def _pooled_variance(phi, mask):
    num = dof = 0.0
    for x in range(phi.shape[1]):
        values = phi[mask[:, x], x]
        if len(values) >= 2:
            num += ((values - values.mean()) ** 2).sum()
            dof += len(values) - 1
    return num / dof


def _reference_scores(fam_a, fam_b, target_family, min_samples=2, min_std=1e-3, fixed=False):
    """Loops: for every valid observation of ``target_family`` (0 = A, 1 = B), Gaussians
    of the other valid observations of A and B on the same example, scipy log-pdfs."""
    global_var = [_pooled_variance(*fam_a), _pooled_variance(*fam_b)]
    phi_t, mask_t = (fam_a, fam_b)[target_family]
    out = np.full(phi_t.shape, np.nan)
    for k, x in zip(*np.nonzero(mask_t), strict=True):
        logpdf = []
        for side, (phi, mask) in enumerate((fam_a, fam_b)):
            keep = mask[:, x].copy()
            if side == target_family:
                keep[k] = False
            values = phi[keep, x]
            if len(values) == 0:
                logpdf.append(np.nan)
                continue
            var = values.var(ddof=1) if len(values) >= max(2, min_samples) and not fixed else None
            std = max(np.sqrt(global_var[side] if var is None else var), min_std)
            logpdf.append(stats.norm.logpdf(phi_t[k, x], values.mean(), std))
        out[k, x] = logpdf[0] - logpdf[1]
    return out


@pytest.fixture
def lira_case():
    """Ten models, six examples; member outputs shifted up; example 5 has one IN model
    and example 4 two (the variance fallbacks), a few observations masked out."""
    rng = np.random.default_rng(1)
    in_mask = rng.random((10, 6)) < 0.5
    in_mask[:, 5] = np.arange(10) == 3
    in_mask[:, 4] = np.arange(10) < 2
    out_mask = ~in_mask
    out_mask[0, 0] = out_mask[7, 2] = in_mask[1, 1] = False  # neither IN nor OUT
    phi = rng.normal(size=(10, 6)) + 2.0 * in_mask + np.arange(6)
    return phi, in_mask, out_mask


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("min_samples", [2, 4])
def test_lira_scores_match_the_leave_one_out_loops(lira_case, fixed, min_samples):
    phi, in_mask, out_mask = lira_case
    got = metrics.lira_scores(phi, in_mask, out_mask, min_samples=min_samples, fixed_variance=fixed)
    want_in = _reference_scores((phi, in_mask), (phi, out_mask), 0, min_samples, fixed=fixed)
    want_out = _reference_scores((phi, in_mask), (phi, out_mask), 1, min_samples, fixed=fixed)
    want = np.where(in_mask, want_in, want_out)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert np.isnan(got[3, 5])  # the only IN model of example 5: no other IN model
    assert np.isnan(got[0, 0]) and np.isnan(got[1, 1])  # neither IN nor OUT


def test_lira_scores_floor_the_std_and_reject_overlapping_masks():
    phi = np.zeros((6, 1))
    phi[:3] = 1.0  # three identical IN and three identical OUT values: zero variance
    in_mask = (np.arange(6) < 3)[:, None]
    scores = metrics.lira_scores(phi, in_mask, ~in_mask, min_std=0.5)
    # log N(1; 1, .5) - log N(1; 0, .5) = 1 / (2 * .25)
    np.testing.assert_allclose(scores[:3, 0], 2.0)
    np.testing.assert_allclose(scores[3:, 0], -2.0)
    with pytest.raises(ValueError, match="overlap"):
        metrics.lira_scores(phi, in_mask, np.ones_like(in_mask))
    with pytest.raises(ValueError, match="bool mask"):
        metrics.lira_scores(phi, in_mask.astype(int), ~in_mask)


def test_lira_tells_members_when_they_differ_and_not_when_they_do_not():
    rng = np.random.default_rng(2)
    in_mask = rng.random((32, 500)) < 0.5
    noise = rng.normal(size=(32, 500)) + rng.normal(size=500) * 3  # per-example offsets
    shifted = metrics.lira_scores(noise + 2.0 * in_mask, in_mask, ~in_mask)
    assert metrics.lira_auc(shifted, in_mask, ~in_mask) > 0.9
    assert metrics.lira_accuracy(shifted, in_mask, ~in_mask) > 0.8
    null = metrics.lira_scores(noise, in_mask, ~in_mask)
    assert abs(metrics.lira_auc(null, in_mask, ~in_mask) - 0.5) < 0.03


# -- AUC and balanced accuracy ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_equals_the_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos, neg = rng.integers(0, 6, size=13), rng.integers(0, 6, size=9)  # many ties
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert metrics.roc_auc(pos, neg) == pytest.approx(np.mean(pairs), abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):  # a missing score is dropped by the caller
        metrics.roc_auc([1.0, np.nan], [0.0])


def test_balanced_accuracy_hand_computed():
    # TPR: 2 of 3 above 0; TNR: 1 of 2 at or below 0 (0.0 counts as negative)
    assert metrics.balanced_accuracy([1.0, 2.0, -1.0], [0.0, 3.0]) == pytest.approx(
        (2 / 3 + 1 / 2) / 2
    )


# -- U-LiRA -----------------------------------------------------------------------------------


def test_ulira_scores_match_the_leave_one_out_loops():
    rng = np.random.default_rng(3)
    phi_u, phi_r = rng.normal(size=(7, 5)) + 1.0, rng.normal(size=(9, 5))
    forgot, unseen = rng.random((7, 5)) < 0.7, rng.random((9, 5)) < 0.7
    forgot[:, 0] = np.arange(7) < 1  # one unlearned observation: NaN for it, fallback
    result = metrics.ulira(phi_u, forgot, phi_r, unseen)
    np.testing.assert_allclose(
        result["scores_unlearned"],
        _reference_scores((phi_u, forgot), (phi_r, unseen), 0),
        rtol=1e-9,
        atol=1e-9,
    )
    np.testing.assert_allclose(
        result["scores_retrained"],
        _reference_scores((phi_u, forgot), (phi_r, unseen), 1),
        rtol=1e-9,
        atol=1e-9,
    )
    s_u, s_r = result["scores_unlearned"], result["scores_retrained"]
    want = ((s_u[~np.isnan(s_u)] > 0).mean() + (s_r[~np.isnan(s_r)] <= 0).mean()) / 2
    assert result["accuracy"] == pytest.approx(want)
    x = 2
    per_x = ((s_u[forgot[:, x], x] > 0).mean() + (s_r[unseen[:, x], x] <= 0).mean()) / 2
    assert result["per_example_accuracy"][x] == pytest.approx(per_x)


def test_ulira_is_at_chance_for_one_distribution_and_certain_for_a_clear_shift():
    rng = np.random.default_rng(4)
    offsets = rng.normal(size=2000) * 3  # examples differ, the families do not
    phi_u = rng.normal(size=(16, 2000)) + offsets
    phi_r = rng.normal(size=(16, 2000)) + offsets
    all_u, all_r = np.ones_like(phi_u, dtype=bool), np.ones_like(phi_r, dtype=bool)
    same = metrics.ulira(phi_u, all_u, phi_r, all_r)
    assert abs(same["accuracy"] - 0.5) < 0.02
    assert abs(same["auc"] - 0.5) < 0.02
    shifted = metrics.ulira(phi_u + 5.0, all_u, phi_r, all_r)
    assert shifted["accuracy"] > 0.98 and shifted["auc"] > 0.99
    assert shifted["per_example_accuracy"].shape == (2000,)


# -- the competition's forgetting quality -----------------------------------------------------


def _reference_epsilon(u, r, delta=0.01, two_sided=True):
    """The estimator written out: every threshold rule on the pooled sample, counted."""
    samples = np.concatenate([r, u])
    is_u = np.r_[np.zeros(len(r), bool), np.ones(len(u), bool)]
    per_attack = [0.0]
    for t in sorted(samples):
        for flip in (False, True) if two_sided else (False,):
            pred = (samples <= t) if flip else (samples > t)
            fpr, fnr = pred[~is_u].mean(), (~pred[is_u]).mean()
            if fpr == 0 and fnr == 0:
                per_attack.append(np.inf)
            elif fpr == 0 or fnr == 0:
                continue
            else:
                a = 1 - delta - fpr
                b = 1 - delta - fnr
                e1 = np.log(a / fnr) if a > 0 else np.nan
                e2 = np.log(b / fpr) if b > 0 else np.nan
                if np.isnan(e1) and np.isnan(e2):
                    per_attack.append(np.inf)
                else:
                    per_attack.append(np.nanmax([e1, e2]))
    return max(per_attack)


def test_threshold_attack_rates_hand_computed():
    fpr, fnr = metrics.threshold_attack_rates([2.5, 4, 5, 6], [0, 1, 2, 3], two_sided=False)
    # thresholds 0, 1, 2, 2.5, 3, 4, 5, 6; "unlearned if > t"
    np.testing.assert_allclose(fpr, [3 / 4, 1 / 2, 1 / 4, 1 / 4, 0, 0, 0, 0])
    np.testing.assert_allclose(fnr, [0, 0, 0, 1 / 4, 1 / 4, 1 / 2, 3 / 4, 1])
    # only (1/4, 1/4) survives: eps = log((1 - .01 - .25) / .25)
    eps = metrics.attack_epsilon(fpr, fnr, delta=0.01)
    assert eps == pytest.approx(np.log(2.96))


def test_two_sided_attacks_catch_an_unlearned_sample_lying_below():
    u, r = [0.0, 1, 2, 3], [2.5, 4, 5, 6]
    one = metrics.challenge_epsilon(np.c_[u], np.c_[r], two_sided=False)
    two = metrics.challenge_epsilon(np.c_[u], np.c_[r], two_sided=True)
    # one-sided: (3/4, 3/4) at t = 2.5 proves nothing; mirrored it is (1/4, 1/4)
    np.testing.assert_allclose(one, [0.0])
    np.testing.assert_allclose(two, [np.log(2.96)])


def test_attack_epsilon_zero_rate_rules():
    assert metrics.attack_epsilon([0.0, 0.3], [0.0, 0.3]) == np.inf  # a perfect attack
    assert metrics.attack_epsilon([0.0], [0.2]) == 0.0  # one zero rate: discarded
    assert metrics.attack_epsilon([1.0], [1.0]) == np.inf  # a perfectly reversed attack
    # max(log(.9 / .2), log(.8 / .1)) = log 8
    assert metrics.attack_epsilon([0.1], [0.2], delta=0.0) == pytest.approx(np.log(8.0))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("two_sided", [False, True])
def test_challenge_epsilon_equals_the_written_out_estimator(seed, two_sided):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 8, size=(12, 6)).astype(float) + np.arange(6) * 0.5
    r = rng.integers(0, 8, size=(10, 6)).astype(float)
    got = metrics.challenge_epsilon(u, r, two_sided=two_sided)
    want = [_reference_epsilon(u[:, x], r[:, x], two_sided=two_sided) for x in range(6)]
    np.testing.assert_allclose(got, want)


def test_forgetting_scores_bins_hand_computed():
    eps = [0.0, 0.49, 0.5, np.log(2.96), 5.99, 6.0, np.inf]
    np.testing.assert_allclose(
        metrics.forgetting_scores(eps), [1, 1, 0.5, 0.25, 2 / 2**12, 2 / 2**13, 2 / 2**13]
    )
    assert metrics.forget_quality([0.0, 0.7]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match=">= 0"):
        metrics.forgetting_scores([np.nan])


def test_forget_quality_near_the_top_for_one_distribution_and_near_zero_when_apart():
    rng = np.random.default_rng(5)
    u, r = rng.normal(size=(512, 200)), rng.normal(size=(512, 200))  # 512 as the competition
    same = metrics.challenge_epsilon(u, r)
    assert np.median(same) < 0.5
    assert metrics.forget_quality(same) > 0.5
    apart = metrics.challenge_epsilon(u + 4.0, r)
    assert np.median(apart) > 3.0
    assert metrics.forget_quality(apart) < 0.05


def test_challenge_score_hand_computed():
    assert metrics.challenge_score(0.5, 0.9, 1.0, 0.8, 0.9) == pytest.approx(0.5 * 0.9 * 0.8 / 0.9)
    with pytest.raises(ValueError, match="positive"):
        metrics.challenge_score(0.5, 0.9, 0.0, 0.8, 0.9)


# -- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_ci_of_a_normal_mean_matches_the_t_interval():
    x = np.random.default_rng(6).normal(3.0, 2.0, size=400)
    estimate, low, high = metrics.bootstrap_ci(x, num_samples=4000, seed=1)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    assert estimate == pytest.approx(x.mean())
    assert low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert metrics.bootstrap_ci(x, seed=1) == metrics.bootstrap_ci(x, seed=1)


def test_bootstrap_ci_of_three_values_matches_the_enumerated_distribution():
    x = np.array([0.0, 1.0, 5.0])
    means = [np.mean(c) for c in itertools.product(x, repeat=3)]  # 27 equally likely
    _, low, high = metrics.bootstrap_ci(x, num_samples=20000, level=0.6)
    # the 0.2 and 0.8 quantiles of the discrete distribution, whose CDF steps lie
    # >= 0.05 away from them (17 sampling standard deviations at 20000 resamples)
    assert low == pytest.approx(np.quantile(means, 0.2, method="inverted_cdf"), abs=1e-9)
    assert high == pytest.approx(np.quantile(means, 0.8, method="inverted_cdf"), abs=1e-9)


def test_bootstrap_ci_resamples_arrays_jointly_along_an_axis():
    scores = np.random.default_rng(7).normal(size=(4, 50))
    # models x examples: the same example columns for both arrays; a paired difference
    # of an array with itself is exactly 0 in every resample
    est, low, high = metrics.bootstrap_ci(
        (scores, scores), lambda a, b: float(np.mean(a - b)), axis=1, num_samples=50
    )
    assert est == low == high == 0.0
    with pytest.raises(ValueError, match="one length"):
        metrics.bootstrap_ci((scores, scores[:, :3]), lambda a, b: 0.0, axis=1)


def test_docstring_examples_run():
    for module in (_audit, _forgetting):
        failures, tried = doctest.testmod(module)
        assert failures == 0


@pytest.mark.parametrize(
    "fn", [metrics.roc_auc, metrics.balanced_accuracy], ids=["roc_auc", "balanced_accuracy"]
)
@pytest.mark.parametrize(
    "positive, negative, pattern",
    [
        ([np.nan, 1.0], [0.0, 0.5], "positive scores hold 1 NaN"),  # roc_auc once gave 1.0
        ([1.0, 2.0], [np.inf, 0.5], "negative scores hold 1 NaN or infinite"),
        ([], [0.0], "at least one positive score"),
        ([np.nan], [0.0], "positive scores hold"),
    ],
)
def test_scores_refuse_non_finite_or_empty_sides(fn, positive, negative, pattern):
    with pytest.raises(ValueError, match=pattern):
        fn(positive, negative)


@pytest.mark.parametrize(
    "logits, labels, pattern",
    [
        # label -1 once read the last class's logit
        (np.zeros((2, 3)), np.array([0, -1]), r"labels must lie in \[0, 3\)"),
        (np.zeros((2, 3)), np.array([0, 3]), r"labels must lie in \[0, 3\)"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "labels must be integers"),
        (np.array([[0.0, np.nan, 1.0]]), np.array([0]), "NaN or infinity"),
    ],
)
def test_logit_confidence_refuses_garbage(logits, labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        metrics.logit_confidence(logits, labels)
