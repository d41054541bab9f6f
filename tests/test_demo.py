"""The digits demo end to end through the CLI, on a shrunken setting."""

from __future__ import annotations

import json

import numpy as np

from scissorhands_jax import cli
from scissorhands_jax.commands import _legends
from scissorhands_jax.demo import format_table, summarize

KEYS = {
    "scenario",
    "method",
    "seed",
    "UA",
    "RA",
    "TA",
    "MIA_entropy",
    "MIA_confidence",
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
        assert set(row) == KEYS
        for key in ("UA", "RA", "TA", "MIA_entropy", "MIA_confidence"):
            assert 0.0 <= row[key] <= 100.0
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
            "MIA_confidence": 4.0,
            "avg_gap": 5.0,
            "rte_s": 6.0,
        }
        for i, ua in enumerate([1.0, 2.0, 6.0])
    ]
    (entry,) = summarize(rows)
    assert entry["n"] == 3
    assert np.isclose(entry["UA"][0], 3.0)
    assert np.isclose(entry["UA"][1], np.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3))
    assert "3.00 ± 2.16" in format_table(rows)
