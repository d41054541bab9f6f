"""Model-level statistics of the audit: partner-excluded U-LiRA fits, the two-way bootstrap,
the jackknife and the pair-flip null, against hand-built cases, closed forms, enumeration
and synthetic null populations (scissorhands_jax.metrics._resampling, .audit)."""

from __future__ import annotations

import dataclasses
import doctest
import itertools

import numpy as np
import pytest
from scipy import stats

from scissorhands_jax import metrics
from scissorhands_jax.experiment import audit
from scissorhands_jax.metrics import _resampling


def null_population(rng, k, n, *, rho=-0.7, model_sd=0.3):
    """Outputs (K, N) with no membership effect: per-example means and scales, a random
    offset per model, and the two models of each pair correlated ``rho`` (complementary
    halves: what one saw the other did not). In each pair one model, at random per
    example, is labelled "forgot x" and the other "never saw x"."""
    g = k // 2
    z1, z2 = rng.normal(size=(2, g, n))
    phi = np.empty((k, n))
    phi[0::2], phi[1::2] = z1, rho * z1 + np.sqrt(1 - rho**2) * z2
    phi = phi * rng.uniform(0.5, 2.0, n) + rng.normal(0, 3, n) + rng.normal(0, model_sd, (k, 1))
    first = rng.random((g, n)) < 0.5
    forgot = np.empty((k, n), bool)
    forgot[0::2], forgot[1::2] = first, ~first
    return phi, forgot, ~forgot


# -- partner exclusion --------------------------------------------------------------------------


def test_partner_exclusion_hand_computed_on_two_pairs():
    # one example, pairs (0, 1) and (2, 3); models 0 and 2 forgot it, 1 and 3 never saw it
    phi = np.array([[1.0], [-1.0], [2.0], [0.5]])
    forgot = np.array([[True], [False], [True], [False]])
    s_u = metrics.ulira(phi, forgot, phi, ~forgot, exclude_partner=True, fixed_variance=True)[
        "scores_unlearned"
    ]
    # target 0: its partner 1 is out, so the unlearned fit is model 2 alone (mean 2) and
    # the retrained fit model 3 alone (mean 0.5); variances: the global ones, pooled over
    # the example: var(1, 2) = 0.5 and var(-1, 0.5) = 1.125
    want = stats.norm.logpdf(1.0, 2.0, np.sqrt(0.5)) - stats.norm.logpdf(1.0, 0.5, np.sqrt(1.125))
    assert s_u[0, 0] == pytest.approx(want, abs=1e-12)
    # target 2: the unlearned fit is model 0 (mean 1), the retrained fit model 1 (mean -1)
    want = stats.norm.logpdf(2.0, 1.0, np.sqrt(0.5)) - stats.norm.logpdf(2.0, -1.0, np.sqrt(1.125))
    assert s_u[2, 0] == pytest.approx(want, abs=1e-12)
    # the partner included, target 0's retrained fit is models 1 and 3: mean -0.25
    old = metrics.ulira(phi, forgot, phi, ~forgot, fixed_variance=True)["scores_unlearned"]
    want = stats.norm.logpdf(1.0, 2.0, np.sqrt(0.5)) - stats.norm.logpdf(1.0, -0.25, np.sqrt(1.125))
    assert old[0, 0] == pytest.approx(want, abs=1e-12)


def _loop_scores(phi_u, forgot, phi_r, unseen, target_family):
    """Loops: Gaussians of the valid observations of the rows other than the target's
    and its partner's, per-example unbiased variance (two or more), else the family's
    pooled within-example variance."""
    families = ((phi_u, forgot), (phi_r, unseen))

    def pooled(phi, mask):
        num = dof = 0.0
        for x in range(phi.shape[1]):
            v = phi[mask[:, x], x]
            if v.size >= 2:
                num, dof = num + ((v - v.mean()) ** 2).sum(), dof + v.size - 1
        return num / dof

    global_var = [pooled(*f) for f in families]
    phi_t, mask_t = families[target_family]
    out = np.full(phi_t.shape, np.nan)
    for k, x in zip(*np.nonzero(mask_t), strict=True):
        logpdf = []
        for side, (phi, mask) in enumerate(families):
            keep = mask[:, x].copy()
            keep[[k, k ^ 1]] = False
            v = phi[keep, x]
            if v.size == 0:
                logpdf.append(np.nan)
                continue
            var = v.var(ddof=1) if v.size >= 2 else global_var[side]
            logpdf.append(stats.norm.logpdf(phi_t[k, x], v.mean(), max(np.sqrt(var), 1e-3)))
        out[k, x] = logpdf[0] - logpdf[1]
    return out


def test_partner_exclusion_matches_the_loops():
    rng = np.random.default_rng(0)
    phi_u, forgot, _ = null_population(rng, 8, 6)
    phi_r = rng.normal(size=(8, 6))
    unseen = ~forgot
    unseen[3, 2] = forgot[5, 4] = False  # missing observations
    forgot[:, 5] = [True, False, False, True, False, True, False, True]  # pairs both sides
    result = metrics.ulira(phi_u, forgot, phi_r, unseen, exclude_partner=True)
    for family, key in enumerate(("scores_unlearned", "scores_retrained")):
        np.testing.assert_allclose(
            result[key], _loop_scores(phi_u, forgot, phi_r, unseen, family), rtol=1e-9, atol=1e-9
        )
    # LiRA on one family of paired models: the same rule
    in_scores = metrics.lira_scores(phi_u, forgot, ~forgot, exclude_partner=True)
    np.testing.assert_allclose(
        in_scores[forgot], _loop_scores(phi_u, forgot, phi_u, ~forgot, 0)[forgot], rtol=1e-9
    )


def test_partner_exclusion_needs_aligned_pairs():
    phi, forgot, unseen = null_population(np.random.default_rng(1), 8, 4)
    with pytest.raises(ValueError, match="exclude_partner"):
        metrics.ulira(phi, forgot, phi[:6], unseen[:6], exclude_partner=True)
    with pytest.raises(ValueError, match="exclude_partner"):
        metrics.lira_scores(phi[:7], forgot[:7], unseen[:7], exclude_partner=True)


def test_partner_excluded_attack_is_at_chance_on_null_populations_and_the_old_fits_are_not():
    rng = np.random.default_rng(2)
    populations = {k: [null_population(rng, k, 2000) for _ in range(8)] for k in (8, 16)}

    def mean_accuracy(k, **options):
        return np.mean(
            [metrics.ulira(p, f, p, u, **options)["accuracy"] for p, f, u in populations[k]]
        )

    # 8 x 2000 x 8 decisions per mean: a standard error of about 0.002
    for k, fixed in itertools.product((8, 16), (False, True)):
        assert mean_accuracy(k, exclude_partner=True, fixed_variance=fixed) == pytest.approx(
            0.5, abs=0.008
        )
    # with the partner in the other family's fit the attack is off chance, in a direction
    # that depends on K and on the variance rule
    assert mean_accuracy(8) < 0.49
    assert mean_accuracy(16, fixed_variance=True) > 0.52


# -- two-way bootstrap and jackknife ------------------------------------------------------------


def test_two_way_bootstrap_variance_is_the_sum_of_both_parts():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1.0, 10), rng.normal(0, 2.0, 30)
    table = a[:, None] + b[None, :]

    def mean(groups, columns):
        return table[groups][:, columns].mean()

    values = metrics.two_way_bootstrap(mean, 10, 30, num_samples=20000, seed=0)
    # mean of a resample = mean(a*) + mean(b*): plug-in variances over G and C
    want = a.var() / 10 + b.var() / 30
    assert values.var() == pytest.approx(want, rel=0.05)
    est, low, high = metrics.two_way_bootstrap_ci(mean, 10, 30, num_samples=4000, seed=0)
    assert est == pytest.approx(table.mean())
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(want), rel=0.1)
    # the examples alone see only var(b) / C
    columns_only = metrics.bootstrap_ci(table, np.mean, axis=1, num_samples=4000)
    assert columns_only[2] - columns_only[1] < 0.8 * (high - low)


def test_two_way_bootstrap_of_a_two_by_two_table_matches_the_enumeration():
    table = np.array([[0.0, 1.0], [4.0, 9.0]])
    means = [
        table[list(g)][:, list(c)].mean()
        for g in itertools.product(range(2), repeat=2)
        for c in itertools.product(range(2), repeat=2)
    ]  # 16 equally likely resamples
    est, low, high = metrics.two_way_bootstrap_ci(
        lambda g, c: table[g][:, c].mean(), 2, 2, num_samples=20000, level=0.56
    )
    # the 0.22 and 0.78 quantiles fall inside steps of the enumerated CDF (its steps are
    # at multiples of 1/16, 0.03 or more away: 10 sampling standard deviations at 20000)
    assert low == pytest.approx(np.quantile(means, 0.22, method="inverted_cdf"))
    assert high == pytest.approx(np.quantile(means, 0.78, method="inverted_cdf"))
    assert est == pytest.approx(3.5)
    with pytest.raises(ValueError, match="num_groups"):
        metrics.two_way_bootstrap(lambda g, c: 0.0, 0, 2)


def test_jackknife_of_a_mean_is_the_standard_error_of_the_group_means():
    groups = np.random.default_rng(4).normal(size=(7, 5))  # 7 groups of 5 values

    def mean(kept):
        return groups[kept].mean()

    want = groups.mean(1).std(ddof=1) / np.sqrt(7)
    assert metrics.jackknife_se(mean, 7) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="num_groups"):
        metrics.jackknife_se(mean, 1)


# -- the pair-flip null -------------------------------------------------------------------------


def test_pair_flip_null_bound_covers_about_95_percent_of_independent_null_populations():
    rng = np.random.default_rng(5)
    bounds = []
    for _ in range(3):
        null = metrics.ulira_null(
            *null_population(rng, 16, 40), num_samples=300, seed=1, exclude_partner=True
        )
        assert null.mean() == pytest.approx(0.5, abs=0.01)
        bounds.append(np.quantile(null, 0.95))
    replicates = np.array(
        [
            metrics.ulira(p, f, p, u, exclude_partner=True)["accuracy"]
            for p, f, u in (null_population(rng, 16, 40) for _ in range(300))
        ]
    )
    coverage = np.mean([np.mean(replicates <= b) for b in bounds])
    assert 0.88 <= coverage <= 0.99


def test_pair_flip_null_draws_the_enumerated_flips_uniformly():
    # three pairs: the 8 ways to flip them give the null's support, each equally likely
    phi, forgot, unseen = null_population(np.random.default_rng(9), 6, 5)
    support = []
    for flips in itertools.product((0, 1), repeat=3):
        swapped = phi[np.arange(6) ^ np.repeat(flips, 2)]
        support.append(metrics.ulira(swapped, forgot, swapped, unseen)["accuracy"])
    null = metrics.ulira_null(phi, forgot, unseen, num_samples=1600, seed=3)
    hits = np.isclose(null[:, None], np.array(support)[None, :], rtol=0, atol=1e-12)
    assert hits.any(axis=1).all()  # whole pairs swapped, never single examples
    values, counts = np.unique(np.round(null, 12), return_counts=True)
    expected = [np.isclose(support, v, atol=1e-12).sum() * 1600 / 8 for v in values]
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    with pytest.raises(ValueError, match="K even"):
        metrics.ulira_null(phi[:5], forgot[:5], unseen[:5])


# -- the audit's rows and sanity ----------------------------------------------------------------

TINY = dataclasses.replace(
    audit.load_protocol("digits_small"), name="tiny", pool_size=160, candidates=80, epochs=2
)


def _null_outputs(data, rng):
    """Logits whose true-class logit is a null population (pairs anti-correlated, no
    membership effect): the logit-confidence is that value minus log 9."""
    k, n = data.members.shape
    phi, _, _ = null_population(rng, k, n)
    pool = np.zeros((k, n, 10))
    pool[:, np.arange(n), data.pool["label"]] = phi + 3.0
    test = rng.normal(0, 1, (k, len(data.test["label"]), 10))
    return {"pool": pool, "test": test}


def test_retrain_row_is_consistent_with_its_null_and_scores_itself_one():
    data = audit.make_population(TINY, 16, seed=0)
    retrain = _null_outputs(data, np.random.default_rng(6))
    row = audit.method_row("tiny", "retrain", retrain, retrain, data, num_bootstrap=300)
    low, high = row["ulira_accuracy_ci"]
    assert low < 0.5 < high
    assert row["ulira_null_range"][0] < 0.5 < row["ulira_null_range"][1]
    assert row["ulira_accuracy"] <= row["ulira_null_bound"]
    # the model-level interval is wider than the candidates-only one
    c_low, c_high = row["ulira_accuracy_ci_candidates"]
    assert high - low > c_high - c_low
    assert row["ulira_accuracy_se"] > 0 and row["forget_quality_se"] > 0
    assert row["forget_quality_rel"] == row["challenge_score_rel"] == 1.0
    assert row["confidence_test_shift"] == row["confidence_forget_shift"] == 0.0


def test_confidence_shift_counted_by_hand():
    data = audit.make_population(TINY, 4, seed=1)
    rng = np.random.default_rng(7)
    retrain = _null_outputs(data, rng)
    cold = {"pool": retrain["pool"] * 0.5, "test": retrain["test"] - 1.0}
    row = audit.method_row("tiny", "cold", cold, retrain, data, num_bootstrap=20)

    def phi(logits, labels):  # log(p / (1 - p)) through the softmax, one by one
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        q = np.take_along_axis(p, labels[None, :, None], -1)[..., 0]
        return np.log(q / (1 - q))

    labels, test_labels = data.pool["label"], data.test["label"]
    want_forget = phi(cold["pool"], labels)[data.forgets].mean()
    assert row["confidence_forget"] == pytest.approx(want_forget, rel=1e-9)
    shift = want_forget - phi(retrain["pool"], labels)[data.forgets].mean()
    assert row["confidence_forget_shift"] == pytest.approx(shift, rel=1e-9)
    # two pairs: leaving one out leaves no fit, so no jackknife
    assert row["ulira_accuracy_se"] is None and row["forget_quality_se"] is None
    # shifting every logit by one constant leaves the softmax alone
    assert row["confidence_test_shift"] == pytest.approx(0.0, abs=1e-9)
    assert row["confidence_test"] == pytest.approx(phi(cold["test"], test_labels).mean())


def _rows(original, original_low, retrain, bound):
    return [
        {
            "protocol": "p",
            "method": "original",
            "ulira_accuracy": original,
            "ulira_accuracy_ci": [original_low, original + 0.05],
        },
        {
            "protocol": "p",
            "method": "retrain",
            "ulira_accuracy": retrain,
            "ulira_accuracy_ci": [retrain - 0.05, retrain + 0.05],
            "ulira_null_bound": bound,
            "ulira_null_range": [1 - bound, bound],
        },
    ]


@pytest.mark.parametrize(
    "original, original_low, retrain, bound, valid",
    [
        (0.70, 0.62, 0.51, 0.54, True),
        (0.70, 0.62, 0.56, 0.54, False),  # Retrain beyond its own null
        (0.58, 0.56, 0.51, 0.54, False),  # the original too weak
        (0.62, 0.53, 0.51, 0.54, False),  # the original's interval reaches chance
    ],
)
def test_sanity_is_judged_against_the_null(original, original_low, retrain, bound, valid):
    check = audit.sanity(_rows(original, original_low, retrain, bound), "p")
    assert check["valid"] is valid
    assert check["null_bound"] == bound


def test_sanity_without_a_null_is_not_valid():
    rows = _rows(0.9, 0.85, 0.5, 0.54)
    del rows[1]["ulira_null_bound"]
    assert audit.sanity(rows, "p")["valid"] is False


def test_report_shows_the_null_relative_quality_and_the_diagnostic():
    from scissorhands_jax.experiment import report

    data = audit.make_population(TINY, 8, seed=2)
    rng = np.random.default_rng(8)
    retrain = _null_outputs(data, rng)
    rows = [
        {**audit.method_row("tiny", m, out, retrain, data, num_bootstrap=50), "rte_s": 0.1}
        for m, out in (("original", _null_outputs(data, rng)), ("retrain", retrain))
    ]
    text = report.audit_markdown(rows)
    assert "Null range of the U-LiRA accuracy" in text
    for column in ("± SE", "÷ Retrain", "Δφ test", "Δφ forget"):
        assert column in text
    assert "| retrain |" in text


def test_docstring_examples_run():
    failures, _ = doctest.testmod(_resampling)
    assert failures == 0
