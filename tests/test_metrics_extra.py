"""The loss MIA, ToW, the gap against Retrain with a chosen MIA, the suite and RTE,
against hand computations and a direct scikit-learn reference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scissorhands_jax.metrics import (
    MIA_FEATURES,
    accuracy,
    against_retrain,
    evaluation_suite,
    example_losses,
    loss_mia,
    rte,
    svc_mia,
    tow,
)


def _peaked(rng, n, peak, classes=4):
    labels = rng.integers(0, classes, size=n)
    p_true = np.clip(peak + rng.normal(0.0, 0.01, size=n), 1.0 / classes, 1.0)
    probs = np.repeat(((1.0 - p_true) / (classes - 1))[:, None], classes, axis=1)
    probs[np.arange(n), labels] = p_true
    return probs, labels


def _sets(members, non_members, forget):
    return dict(
        retain_probs=members[0],
        retain_labels=members[1],
        test_probs=non_members[0],
        test_labels=non_members[1],
        forget_probs=forget[0],
        forget_labels=forget[1],
    )


# ---------------------------------------------------------------------------- loss MIA


def test_example_losses_by_hand():
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    got = example_losses(probs, np.array([0, 1, 0]))
    np.testing.assert_allclose(got, [np.log(2), -np.log(0.8), -np.log(1e-30)])


def test_loss_mia_separable_extremes():
    rng = np.random.default_rng(0)
    members, non_members = _peaked(rng, 200, 0.99), _peaked(rng, 150, 0.4)
    assert loss_mia(**_sets(members, non_members, _peaked(rng, 100, 0.4))) >= 95.0
    assert loss_mia(**_sets(members, non_members, _peaked(rng, 100, 0.99))) <= 5.0


def test_loss_mia_inseparable_is_not_extreme():
    # Members, non-members and forget set from one distribution: the attack is guessing,
    # so averaged over fixed seeds it sits well inside (0, 100).
    scores = []
    for seed in range(5):
        rng = np.random.default_rng(seed)

        def draw(rng=rng):
            return rng.dirichlet(np.ones(4), 200), rng.integers(0, 4, 200)

        scores.append(loss_mia(**_sets(draw(), draw(), draw())))
    assert 15.0 < np.mean(scores) < 85.0, scores


def test_loss_mia_matches_direct_sklearn_reference():
    rng = np.random.default_rng(3)
    retain = (rng.dirichlet(np.full(5, 0.3), 300), rng.integers(0, 5, 300))
    test = (rng.dirichlet(np.ones(5), 120), rng.integers(0, 5, 120))
    forget = (rng.dirichlet(np.full(5, 0.6), 80), rng.integers(0, 5, 80))

    def losses(p, y):
        pairs = zip(p, y, strict=True)
        return np.array([[-np.log(max(row[label], 1e-30))] for row, label in pairs])

    x = np.concatenate([losses(retain[0][:120], retain[1][:120]), losses(*test)])
    y = np.concatenate([np.ones(120), np.zeros(120)])
    clf = LogisticRegression().fit(x, y)
    expected = 100.0 * np.mean(clf.predict(losses(*forget)) == 0)
    assert loss_mia(**_sets(retain, test, forget)) == pytest.approx(expected)


def test_loss_mia_rejects_logits():
    sets = _sets(
        (np.array([[2.0, -1.0]]), np.array([0])),
        (np.array([[0.5, 0.5]]), np.array([0])),
        (np.array([[0.5, 0.5]]), np.array([0])),
    )
    with pytest.raises(ValueError, match="softmax"):
        loss_mia(**sets)


# ---------------------------------------------------------------------------------- ToW


def test_tow_by_hand():
    ref = {"UA": 5.0, "RA": 100.0, "TA": 90.0}
    assert tow(ref, ref) == 1.0
    row = {"UA": 15.0, "RA": 95.0, "TA": 70.0}
    assert tow(row, ref) == pytest.approx(0.9 * 0.95 * 0.8)
    assert tow({"UA": 100.0, "RA": 0.0, "TA": 90.0}, {"UA": 0.0, "RA": 100.0, "TA": 90.0}) == 0.0


def test_tow_errors():
    with pytest.raises(KeyError, match="TA"):
        tow({"UA": 1.0, "RA": 1.0}, {"UA": 1.0, "RA": 1.0, "TA": 1.0})
    with pytest.raises(ValueError, match="percentages"):
        tow({"UA": 0.5, "RA": 1.0, "TA": 120.0}, {"UA": 0.0, "RA": 1.0, "TA": 1.0})


# ------------------------------------------------------------------- gap against Retrain


def test_against_retrain_uses_the_chosen_mia_by_hand():
    ref = {"UA": 10.0, "RA": 100.0, "TA": 90.0, "MIA_entropy": 20.0, "MIA_loss": 50.0}
    row = {"UA": 14.0, "RA": 98.0, "TA": 91.0, "MIA_entropy": 30.0, "MIA_loss": 40.0}
    got = against_retrain(row, ref)
    assert got["avg_gap"] == pytest.approx((4 + 2 + 1 + 10) / 4)
    assert got["avg_gap_mia"] == "MIA_entropy"
    assert got["ToW"] == pytest.approx(0.96 * 0.98 * 0.99)
    assert against_retrain(row, ref, mia_feature="loss")["avg_gap"] == pytest.approx(17 / 4)
    with pytest.raises(ValueError, match="unknown MIA feature"):
        against_retrain(row, ref, mia_feature="loss_entropy")


# ------------------------------------------------------------------------- suite and RTE


def test_evaluation_suite_has_every_metric_and_agrees_with_the_parts():
    rng = np.random.default_rng(1)
    sets = _sets(_peaked(rng, 120, 0.9), _peaked(rng, 80, 0.6), _peaked(rng, 40, 0.7))
    row = evaluation_suite(**sets)
    assert set(row) == {
        "UA",
        "RA",
        "TA",
        "MIA_loss",
        *(f"MIA_{f}" for f in MIA_FEATURES),
        *(f"MIA_{f}_attack_auc" for f in MIA_FEATURES),
    }
    assert row["UA"] == 100.0 - accuracy(sets["forget_probs"], sets["forget_labels"])
    assert row["MIA_entropy"] == svc_mia(**sets, feature="entropy")
    assert row["MIA_loss"] == loss_mia(**sets)


def test_rte_returns_the_result_and_seconds():
    import jax.numpy as jnp

    out, seconds = rte(lambda a, b=1: jnp.arange(a) * b, 5, b=2)
    assert out.tolist() == [0, 2, 4, 6, 8]
    assert isinstance(seconds, float) and seconds >= 0.0


@pytest.mark.parametrize("module", ["_tow", "_rte", "_loss_mia"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"scissorhands_jax.metrics.{module}")
    failures, tried = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_loss_mia_refuses_a_degenerate_attack():
    # the same outputs as members and as non-members: the attack's fit is w = b = 0 and
    # predict's tie rule once called every forget example non-member (100.0)
    rng = np.random.default_rng(0)
    probs, labels = rng.dirichlet(np.ones(10), size=50), rng.integers(0, 10, 50)
    same = dict(probs=probs, labels=labels)
    sets = {f"{role}_{k}": v for role in ("retain", "test", "forget") for k, v in same.items()}
    with pytest.raises(ValueError, match="loss_mia: the attack is degenerate"):
        loss_mia(**sets)
    uniform = np.full((50, 10), 0.1)  # a collapsed model: every loss log 10
    sets.update(retain_probs=uniform, test_probs=uniform)
    with pytest.raises(ValueError, match="degenerate"):
        loss_mia(**sets)
