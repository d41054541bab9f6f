"""The digits demo end to end through the CLI, on a shrunken setting."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from scissorhands_jax import cli
from scissorhands_jax.commands import _legends
from scissorhands_jax.experiment.demo import format_table, summarize

pytestmark = pytest.mark.slow  # end to end

KEYS = {
    "scenario",
    "method",
    "seed",
    "UA",
    "RA",
    "TA",
    "MIA_entropy",
    "MIA_confidence",
    "MIA_entropy_attack_auc",
    "MIA_confidence_attack_auc",
    "avg_gap_mia",
    "avg_gap",
    "rte_s",
}


def test_demo_writes_rows_and_prints_table(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(
        [
            "demo",
            "--out",
            str(out),
            "--seeds",
            "0",
            "1",
            "--scenarios",
            "class0",
            "--train-epochs",
            "2",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2 * 3
    for row in rows:
        assert set(row) == KEYS | {"versions"}
        assert row["versions"]["jax"] == jax.__version__  # what made the number
        for key in ("UA", "RA", "TA", "MIA_entropy", "MIA_confidence"):
            assert 0.0 <= row[key] <= 100.0
        assert 0.0 <= row["MIA_entropy_attack_auc"] <= 1.0
        assert row["avg_gap_mia"] == "MIA_entropy"
        assert row["rte_s"] > 0
    retrain = [r for r in rows if r["method"] == "retrain"]
    assert all(r["avg_gap"] == 0.0 for r in retrain)
    # class 0 never reaches the retrained model: it cannot classify it
    assert all(r["UA"] == 100.0 for r in retrain)
    printed = capsys.readouterr().out
    assert "| class0 | scissorhands |" in printed and "results.json" in printed
    assert printed.index(_legends.CLASSIFIER) > printed.index("| class0 | scissorhands |")


def test_summary_mean_and_std_by_hand():
    rows = [
        {
            "scenario": "s",
            "method": "m",
            "seed": i,
            "UA": ua,
            "RA": 1.0,
            "TA": 2.0,
            "MIA_entropy": 3.0,
            "MIA_entropy_attack_auc": auc,
            "MIA_confidence": 4.0,
            "avg_gap": 5.0,
            "rte_s": 6.0,
        }
        for i, (ua, auc) in enumerate([(1.0, 0.5), (2.0, 0.6), (6.0, 0.52)])
    ]
    (entry,) = summarize(rows)
    assert entry["n"] == 3
    assert np.isclose(entry["UA"][0], 3.0)
    assert np.isclose(entry["UA"][1], np.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3))
    table = format_table(rows)
    assert "3.00 ± 2.16" in table
    assert "3.00 ± 0.00 †" in table  # mean attack AUC 0.54 < 0.55: uninformative
    for row in rows:
        row["MIA_entropy_attack_auc"] = 0.7
    assert "†" not in format_table(rows)


def test_digits_retain_is_in_data_set_order_as_the_release_orders_it():
    """The SVC attack's members are the first len(test) retain examples; the authors'
    release takes them in data-set index order (numpy.setdiff1d of data-set indices)."""
    from sklearn.datasets import load_digits

    import scissorhands_jax as shs

    digits = load_digits()
    perm = np.random.default_rng(0).permutation(1797)
    train_ids = perm[360:]
    for scenario, seed in (("random10", 0), ("random10", 2), ("class0", 0)):
        split = shs.data.load_digits10(scenario, seed)
        if scenario == "random10":
            forget_ids = np.sort(np.random.default_rng(seed).choice(train_ids, 143, replace=False))
        else:
            forget_ids = np.sort(train_ids[digits.target[train_ids] == 0])
        retain_ids = np.setdiff1d(train_ids, forget_ids)
        np.testing.assert_array_equal(split.train_ids[split.retain_idx], retain_ids)
        np.testing.assert_array_equal(np.sort(split.train_ids[split.forget_idx]), forget_ids)
        expected = (digits.images[retain_ids] / 16.0).astype(np.float32)[..., None]
        np.testing.assert_array_equal(split.retain["image"], expected)
