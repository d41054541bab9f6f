"""Tests for scissorhands_jax.metrics against hand computations and NumPy/sklearn references:
accuracy, the MIA features, the SVC and loss attacks, Avg. Gap (against Retrain with a
chosen MIA), ToW, the evaluation suite and RTE."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from scissorhands_jax.metrics import (
    MIA_FEATURES,
    accuracy,
    against_retrain,
    avg_gap,
    classification_metrics,
    evaluation_suite,
    example_losses,
    loss_mia,
    mia_features,
    rte,
    svc_attack_auc,
    svc_mia,
    tow,
)

NUM_CLASSES = 5


def _random_probs(rng, n, num_classes=NUM_CLASSES, concentration=1.0):
    probs = rng.dirichlet(np.full(num_classes, concentration), size=n)
    labels = rng.integers(0, num_classes, size=n)
    return probs, labels


def _peaked_probs(rng, n, peak, num_classes=NUM_CLASSES):
    """Softmax-like rows with mass `peak` (plus a little noise) on the label."""
    labels = rng.integers(0, num_classes, size=n)
    p_true = np.clip(peak + rng.normal(0.0, 0.01, size=n), 1.0 / num_classes, 1.0)
    probs = np.repeat(((1.0 - p_true) / (num_classes - 1))[:, None], num_classes, axis=1)
    probs[np.arange(n), labels] = p_true
    return probs, labels


def _attack_sets(members, non_members, forget):
    return dict(
        retain_probs=members[0],
        retain_labels=members[1],
        test_probs=non_members[0],
        test_labels=non_members[1],
        forget_probs=forget[0],
        forget_labels=forget[1],
    )


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_hand_made():
    outputs = np.array(
        [
            [2.0, 1.0, 0.0],  # argmax 0
            [0.1, 0.2, 0.7],  # argmax 2
            [-1.0, 3.0, 0.5],  # argmax 1
            [0.0, 0.0, 5.0],  # argmax 2
            [4.0, -2.0, 1.0],  # argmax 0
        ]
    )
    labels = np.array([0, 2, 0, 1, 0])
    assert accuracy(outputs, labels) == pytest.approx(60.0)
    assert accuracy(outputs, np.array([0, 2, 1, 2, 0])) == pytest.approx(100.0)
    assert accuracy(outputs, np.array([1, 0, 0, 0, 1])) == pytest.approx(0.0)


def test_accuracy_logits_and_probabilities_agree_and_accept_jax():
    logits = jnp.array([[0.3, -1.0, 2.0], [5.0, 1.0, 1.0], [0.0, 0.2, 0.1], [1.0, 1.5, -3.0]])
    labels = jnp.array([2, 1, 1, 1])
    from_logits = accuracy(logits, labels)
    from_probs = accuracy(jax.nn.softmax(logits, axis=-1), labels)
    assert isinstance(from_logits, float)
    assert from_logits == pytest.approx(75.0)
    assert from_probs == pytest.approx(75.0)


def test_accuracy_errors():
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.zeros((0, 3)), np.zeros((0,), dtype=int))
    with pytest.raises(ValueError, match="number of examples"):
        accuracy(np.zeros((4, 3)), np.zeros((3,), dtype=int))
    with pytest.raises(ValueError, match=r"\(n, C\)"):
        accuracy(np.zeros((4,)), np.zeros((4,), dtype=int))
    with pytest.raises(ValueError, match=r"\(n,\)"):
        accuracy(np.zeros((4, 3)), np.zeros((4, 1), dtype=int))


# ------------------------------------------------------------------------- MIA features


def test_correctness_and_confidence_hand_computed():
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.1, 0.3, 0.6],
            [0.25, 0.5, 0.25],
            [0.0, 0.0, 1.0],
        ]
    )
    labels = np.array([0, 1, 1, 0])
    correctness = mia_features(probs, labels, "correctness")
    confidence = mia_features(probs, labels, "confidence")
    assert correctness.shape == (4, 1)
    assert confidence.shape == (4, 1)
    np.testing.assert_array_equal(correctness.ravel(), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(confidence.ravel(), [0.7, 0.3, 0.5, 0.0])


def test_entropy_matches_numpy_loop():
    rng = np.random.default_rng(0)
    probs, labels = _random_probs(rng, 12, concentration=0.5)
    probs[0] = [0.0, 0.5, 0.5, 0.0, 0.0]  # zeros contribute nothing (p log p -> 0)
    expected = []
    for row in probs:
        total = 0.0
        for p in row:
            if p > 0:
                total -= p * math.log(p)
        expected.append(total)
    got = mia_features(probs, labels, "entropy")
    assert got.shape == (12, 1)
    np.testing.assert_allclose(got.ravel(), expected, rtol=1e-10, atol=1e-12)
    assert got[0, 0] == pytest.approx(math.log(2.0))


def test_modified_entropy_matches_numpy_loop():
    rng = np.random.default_rng(1)
    probs, labels = _random_probs(rng, 12)
    expected = []
    for row, y in zip(probs, labels, strict=True):
        total = -(1.0 - row[y]) * math.log(row[y])
        for i, p in enumerate(row):
            if i != y:
                total -= p * math.log(1.0 - p)
        expected.append(total)
    got = mia_features(probs, labels, "modified_entropy")
    assert got.shape == (12, 1)
    np.testing.assert_allclose(got.ravel(), expected, rtol=1e-10)


def test_modified_entropy_hand_computed_two_classes():
    # p = (0.8, 0.2), y = 0: -(0.2) log 0.8 - 0.2 log 0.8 = -0.4 log 0.8.
    got = mia_features(np.array([[0.8, 0.2]]), np.array([0]), "modified_entropy")
    assert got[0, 0] == pytest.approx(-0.4 * math.log(0.8))


def test_features_clip_exact_zeros_and_ones():
    # One-hot on the label: both entropies are exactly 0.
    # One-hot on a wrong class: log p_y and log(1 - p_j) both hit the 1e-30 floor.
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = np.array([0, 0])
    entropy = mia_features(probs, labels, "entropy").ravel()
    modified = mia_features(probs, labels, "modified_entropy").ravel()
    np.testing.assert_allclose(entropy, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(modified, [0.0, -2.0 * math.log(1e-30)], atol=1e-9)
    assert np.all(np.isfinite(modified))


def test_probabilities_feature_is_the_full_vector_and_accepts_jax():
    logits = jax.random.normal(jax.random.key(0), (6, NUM_CLASSES))
    probs = jax.nn.softmax(logits, axis=-1)
    labels = jnp.arange(6) % NUM_CLASSES
    got = mia_features(probs, labels, "probabilities")
    assert got.shape == (6, NUM_CLASSES)
    np.testing.assert_allclose(got, np.asarray(probs), rtol=1e-6)
    for kind in MIA_FEATURES:
        feature = mia_features(probs, labels, kind)
        assert feature.dtype == np.float64
        assert np.all(np.isfinite(feature))


def test_mia_features_errors():
    probs = np.full((3, 3), 1.0 / 3.0)
    labels = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="unknown MIA feature") as info:
        mia_features(probs, labels, "loss")
    for kind in MIA_FEATURES:
        assert kind in str(info.value)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        mia_features(probs, np.array([0, 1, 3]), "confidence")
    with pytest.raises(ValueError, match="integers"):
        mia_features(probs, np.array([0.0, 1.0, 2.0]), "confidence")
    with pytest.raises(ValueError, match="logits"):
        mia_features(np.array([[2.0, -1.0, 0.5]]), np.array([0]), "entropy")
    with pytest.raises(ValueError, match="number of examples"):
        mia_features(probs, np.array([0, 1]), "entropy")


# --------------------------------------------------------------------------- SVC attack


def test_svc_mia_separable_extremes():
    rng = np.random.default_rng(0)
    members = _peaked_probs(rng, 200, peak=0.99)  # confident: low entropy
    non_members = _peaked_probs(rng, 150, peak=0.3)  # unsure: high entropy
    forget_like_non_members = _peaked_probs(rng, 100, peak=0.3)
    forget_like_members = _peaked_probs(rng, 100, peak=0.99)
    for feature in ("entropy", "confidence", "modified_entropy", "probabilities"):
        high = svc_mia(
            **_attack_sets(members, non_members, forget_like_non_members), feature=feature
        )
        low = svc_mia(**_attack_sets(members, non_members, forget_like_members), feature=feature)
        assert high >= 95.0, feature
        assert low <= 5.0, feature


def test_svc_mia_inseparable_is_not_extreme():
    # Members, non-members and forget set from one distribution: the attack is
    # guessing, so averaged over fixed seeds it should sit well inside (0, 100).
    for feature in ("entropy", "confidence"):
        scores = []
        for seed in range(5):
            rng = np.random.default_rng(seed)
            sets = _attack_sets(
                _random_probs(rng, 200), _random_probs(rng, 200), _random_probs(rng, 200)
            )
            score = svc_mia(**sets, feature=feature)
            assert 0.0 <= score <= 100.0
            scores.append(score)
        assert 15.0 < np.mean(scores) < 85.0, (feature, scores)


def _reference_efficacy(member_features, non_member_features, forget_features):
    x = np.concatenate([member_features, non_member_features])
    y = np.concatenate([np.ones(len(member_features)), np.zeros(len(non_member_features))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return 100.0 * np.mean(clf.predict(forget_features) == 0)


def _loop_confidence(probs, labels):
    return np.array([[row[y]] for row, y in zip(probs, labels, strict=True)])


def test_svc_mia_matches_direct_sklearn_reference():
    rng = np.random.default_rng(3)
    retain = _random_probs(rng, 300, concentration=0.3)
    test = _random_probs(rng, 120, concentration=1.0)
    forget = _random_probs(rng, 80, concentration=0.6)
    n = len(test[1])
    expected_conf = _reference_efficacy(
        _loop_confidence(retain[0][:n], retain[1][:n]),
        _loop_confidence(*test),
        _loop_confidence(*forget),
    )
    expected_probs = _reference_efficacy(retain[0][:n], test[0], forget[0])
    sets = _attack_sets(retain, test, forget)
    assert svc_mia(**sets, feature="confidence") == pytest.approx(expected_conf)
    assert svc_mia(**sets, feature="probabilities") == pytest.approx(expected_probs)


def test_svc_mia_uses_only_the_first_len_test_retain_examples():
    rng = np.random.default_rng(4)
    head = _peaked_probs(rng, 100, peak=0.99)
    tail = _peaked_probs(rng, 400, peak=0.3)  # would look like non-members if used
    retain = (np.concatenate([head[0], tail[0]]), np.concatenate([head[1], tail[1]]))
    test = _peaked_probs(rng, 100, peak=0.3)
    forget = _peaked_probs(rng, 60, peak=0.3)
    with_tail = svc_mia(**_attack_sets(retain, test, forget))
    without_tail = svc_mia(**_attack_sets(head, test, forget))
    assert with_tail == without_tail
    assert with_tail >= 95.0


def test_svc_mia_retain_shorter_than_test_uses_all_of_retain():
    rng = np.random.default_rng(5)
    retain = _random_probs(rng, 40, concentration=0.3)
    test = _random_probs(rng, 150)
    forget = _random_probs(rng, 50, concentration=0.5)
    expected = _reference_efficacy(
        _loop_confidence(*retain), _loop_confidence(*test), _loop_confidence(*forget)
    )
    got = svc_mia(**_attack_sets(retain, test, forget), feature="confidence")
    assert got == pytest.approx(expected)


def test_svc_mia_errors():
    rng = np.random.default_rng(6)
    good = _random_probs(rng, 20)
    empty = (np.zeros((0, NUM_CLASSES)), np.zeros((0,), dtype=int))
    with pytest.raises(ValueError, match="forget set is empty"):
        svc_mia(**_attack_sets(good, good, empty))
    with pytest.raises(ValueError, match="test set is empty"):
        svc_mia(**_attack_sets(good, empty, good))
    with pytest.raises(ValueError, match="retain set is empty"):
        svc_mia(**_attack_sets(empty, good, good))
    with pytest.raises(ValueError, match="unknown MIA feature"):
        svc_mia(**_attack_sets(good, good, good), feature="loss")
    with pytest.raises(ValueError, match="same number of classes"):
        svc_mia(**_attack_sets(good, _random_probs(rng, 20, num_classes=3), good))
    with pytest.raises(ValueError, match="forget probabilities and labels"):
        svc_mia(**_attack_sets(good, good, (good[0], good[1][:-1])))
    with pytest.raises(ValueError, match=r"retain probabilities must have shape \(n, C\)"):
        svc_mia(**_attack_sets((good[0][:, 0], good[1]), good, good))


# ------------------------------------------------------------------------------ avg gap


def test_avg_gap_hand_computed():
    row = {"UA": 5.0, "RA": 98.0, "TA": 90.0, "MIA_entropy": 10.0, "extra": 1e6}
    retrain = {"UA": 8.0, "RA": 100.0, "TA": 91.0, "MIA_entropy": 16.0}
    # (3 + 2 + 1 + 6) / 4 = 3
    assert avg_gap(row, retrain) == pytest.approx(3.0)
    assert avg_gap(row, retrain, keys=("UA", "TA")) == pytest.approx(2.0)
    assert avg_gap(retrain, row) == pytest.approx(3.0)
    assert isinstance(avg_gap(row, retrain), float)


def test_avg_gap_errors():
    full = {"UA": 1.0, "RA": 2.0, "TA": 3.0, "MIA_entropy": 4.0}
    partial = {"UA": 1.0, "RA": 2.0, "TA": 3.0}
    with pytest.raises(KeyError, match="MIA_entropy"):
        avg_gap(partial, full)
    with pytest.raises(KeyError, match="MIA_entropy"):
        avg_gap(full, partial)
    with pytest.raises(ValueError, match="at least one"):
        avg_gap(full, full, keys=())


# ------------------------------------------------------------------ classification row


def test_classification_metrics_row():
    rng = np.random.default_rng(7)
    forget = _peaked_probs(rng, 40, peak=0.3)
    retain = _peaked_probs(rng, 120, peak=0.99)
    test = _peaked_probs(rng, 60, peak=0.3)
    # Make exactly 10 of 40 forget examples, 3 of 120 retain and 15 of 60 test wrong
    # by moving the label to another class.
    for (_, labels), n_wrong in ((forget, 10), (retain, 3), (test, 15)):
        labels[:n_wrong] = (labels[:n_wrong] + 1) % NUM_CLASSES
    row = classification_metrics(
        forget_probs=forget[0],
        forget_labels=forget[1],
        retain_probs=retain[0],
        retain_labels=retain[1],
        test_probs=test[0],
        test_labels=test[1],
    )
    assert set(row) == {
        "UA",
        "RA",
        "TA",
        "MIA_entropy",
        "MIA_confidence",
        "MIA_entropy_attack_auc",
        "MIA_confidence_attack_auc",
    }
    assert all(isinstance(v, float) for v in row.values())
    assert row["UA"] == pytest.approx(25.0)
    assert row["RA"] == pytest.approx(117 / 120 * 100)
    assert row["TA"] == pytest.approx(75.0)
    sets = _attack_sets(retain, test, forget)
    assert row["MIA_entropy"] == svc_mia(**sets, feature="entropy")
    assert row["MIA_confidence"] == svc_mia(**sets, feature="confidence")
    # Forget outputs are unsure like the test set: the attack calls them non-members.
    assert row["MIA_entropy"] >= 90.0
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(
            forget_probs=np.zeros((0, NUM_CLASSES)),
            forget_labels=np.zeros((0,), dtype=int),
            retain_probs=retain[0],
            retain_labels=retain[1],
            test_probs=test[0],
            test_labels=test[1],
        )


# ------------------------------------------------------------------- attack validity


def _brute_force_auc(pos, neg):
    """P[s+ > s-] + P[s+ = s-] / 2 by counting every pair."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_svc_attack_auc_matches_two_fold_reference():
    rng = np.random.default_rng(11)
    members = _peaked_probs(rng, 90, peak=0.8)
    members[0][:, :] = np.clip(members[0] + rng.normal(0, 0.05, members[0].shape), 0, 1)
    members = (members[0] / members[0].sum(1, keepdims=True), members[1])
    non_members = _random_probs(rng, 70, concentration=0.7)
    x_m = _loop_confidence(*members)[:70]  # members: the first len(test) retain rows
    x_n = _loop_confidence(*non_members)
    # Folds alternate within each side, in order; fit on one fold, score the other.
    scores_m, scores_n = np.empty(len(x_m)), np.empty(len(x_n))
    for held in (0, 1):
        fm, fn = np.arange(len(x_m)) % 2 != held, np.arange(len(x_n)) % 2 != held
        x = np.concatenate([x_m[fm], x_n[fn]])
        y = np.concatenate([np.ones(fm.sum()), np.zeros(fn.sum())])
        clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
        scores_m[~fm] = clf.decision_function(x_m[~fm])
        scores_n[~fn] = clf.decision_function(x_n[~fn])
    expected = _brute_force_auc(scores_m, scores_n)
    got = svc_attack_auc(
        retain_probs=members[0],
        retain_labels=members[1],
        test_probs=non_members[0],
        test_labels=non_members[1],
        feature="confidence",
    )
    assert got == pytest.approx(expected, abs=1e-12)


def test_svc_attack_auc_separates_signal_from_noise():
    rng = np.random.default_rng(12)
    # Members confident, non-members unsure: a valid attack, AUC near 1.
    strong = svc_attack_auc(
        retain_probs=_peaked_probs(rng, 200, 0.99)[0],
        retain_labels=_peaked_probs(rng, 200, 0.99)[1],
        test_probs=_peaked_probs(rng, 150, 0.3)[0],
        test_labels=_peaked_probs(rng, 150, 0.3)[1],
    )
    assert strong > 0.95
    # One distribution for both: nothing to learn, AUC near 0.5 on average.
    noise = []
    for seed in range(6):
        r = np.random.default_rng(100 + seed)
        a, b = _random_probs(r, 300), _random_probs(r, 300)
        noise.append(
            svc_attack_auc(retain_probs=a[0], retain_labels=a[1], test_probs=b[0], test_labels=b[1])
        )
    assert abs(np.mean(noise) - 0.5) < 0.05, noise


def test_svc_attack_auc_uses_the_svc_mia_members_and_checks_input():
    rng = np.random.default_rng(13)
    head = _peaked_probs(rng, 100, peak=0.99)
    tail = _peaked_probs(rng, 400, peak=0.3)
    retain = (np.concatenate([head[0], tail[0]]), np.concatenate([head[1], tail[1]]))
    test = _peaked_probs(rng, 100, peak=0.3)
    kw = dict(test_probs=test[0], test_labels=test[1])
    with_tail = svc_attack_auc(retain_probs=retain[0], retain_labels=retain[1], **kw)
    head_only = svc_attack_auc(retain_probs=head[0], retain_labels=head[1], **kw)
    assert with_tail == head_only
    with pytest.raises(ValueError, match="at least 2 members"):
        svc_attack_auc(retain_probs=head[0][:1], retain_labels=head[1][:1], **kw)
    with pytest.raises(ValueError, match="unknown MIA feature"):
        svc_attack_auc(retain_probs=head[0], retain_labels=head[1], feature="nope", **kw)


@pytest.mark.parametrize(
    "outputs, labels, pattern",
    [
        # NaN rows once scored 100.0 (the arg-max of NaN is 0, the label here)
        (np.full((5, 10), np.nan), np.zeros(5, int), "NaN or infinity in 5 of 5 rows"),
        (np.array([[np.inf, 0.0], [0.0, 1.0]]), np.array([0, 1]), "NaN or infinity in 1"),
        # out-of-range labels once scored 0.0, negative ones matched nothing or the end
        (np.eye(3), np.array([0, 1, 3]), r"labels must lie in \[0, 3\)"),
        (np.eye(3), np.array([0, -1, 2]), r"labels must lie in \[0, 3\)"),
        (np.eye(3), np.array([0.0, 1.0, 2.0]), "labels must be integers"),
    ],
)
def test_accuracy_refuses_garbage(outputs, labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        accuracy(outputs, labels)


# ---------------------------------------------------------------------------- loss MIA


_peaked4 = functools.partial(_peaked_probs, num_classes=4)
"""The loss attack's, ToW's and the suite's cases: four classes."""


def test_example_losses_by_hand():
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    got = example_losses(probs, np.array([0, 1, 0]))
    np.testing.assert_allclose(got, [np.log(2), -np.log(0.8), -np.log(1e-30)])


def test_loss_mia_separable_extremes():
    rng = np.random.default_rng(0)
    members, non_members = _peaked4(rng, 200, 0.99), _peaked4(rng, 150, 0.4)
    assert loss_mia(**_attack_sets(members, non_members, _peaked4(rng, 100, 0.4))) >= 95.0
    assert loss_mia(**_attack_sets(members, non_members, _peaked4(rng, 100, 0.99))) <= 5.0


def test_loss_mia_inseparable_is_not_extreme():
    # Members, non-members and forget set from one distribution: the attack is guessing,
    # so averaged over fixed seeds it sits well inside (0, 100).
    scores = []
    for seed in range(5):
        rng = np.random.default_rng(seed)

        def draw(rng=rng):
            return rng.dirichlet(np.ones(4), 200), rng.integers(0, 4, 200)

        scores.append(loss_mia(**_attack_sets(draw(), draw(), draw())))
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
    assert loss_mia(**_attack_sets(retain, test, forget)) == pytest.approx(expected)


def test_loss_mia_rejects_logits():
    sets = _attack_sets(
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
    sets = _attack_sets(_peaked4(rng, 120, 0.9), _peaked4(rng, 80, 0.6), _peaked4(rng, 40, 0.7))
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
