"""``scissorhands demo``: the comparison of the two digits-10 configs with Retrain and
Scissorhands, end to end through the CLI on their SMOKE schedules; seeds added to a
directory keep its rows, and bad settings or removed flags are refused naming the fix."""

from __future__ import annotations

import json

import jax
import pytest
from conftest import DEMO, boom, err_line

from scissorhands_jax import cli
from scissorhands_jax.commands import _legends
from scissorhands_jax.experiment import _compare_scenario
from scissorhands_jax.experiment import pipeline as pipe

METRICS = ("UA", "RA", "TA", "MIA_entropy", "MIA_confidence", "MIA_loss")


@pytest.mark.slow  # end to end
def test_demo_writes_rows_and_prints_table(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--seeds", "0", "1", "--scenarios", "class0", "--smoke"]
    assert cli.main([*argv, "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("retrain", 0),
        ("retrain", 1),
        ("original", 0),
        ("original", 1),
        ("scissorhands", 0),
        ("scissorhands", 1),
    ]
    for row in rows:
        assert row["scenario"] == "digits10_class0_smoke" and "error" not in row
        assert row["versions"]["jax"] == jax.__version__  # what made the number
        for key in METRICS:
            assert 0.0 <= row[key] <= 100.0
        assert 0.0 <= row["MIA_entropy_attack_auc"] <= 1.0
        assert row["avg_gap_mia"] == "MIA_entropy"
        assert row["rte_s"] > 0
    retrain = [r for r in rows if r["method"] == "retrain"]
    assert all(r["avg_gap"] == 0.0 for r in retrain)
    # class 0 never reaches the retrained model: it cannot classify it
    assert all(r["UA"] == 100.0 for r in retrain)
    # Scissorhands runs the config's unlearn section (the protocol's lr, SMOKE's one epoch)
    shs_row = rows[-1]["hyperparameters"]
    assert (shs_row["lr"], shs_row["epochs"], shs_row["batch_size"]) == (5e-3, 1, 64)
    assert shs_row["eligible"] == "all_but_first_conv"
    printed = capsys.readouterr().out
    assert "| digits10_class0_smoke | n | UA |" in printed and "| scissorhands | 2 |" in printed
    assert printed.index(_legends.CLASSIFIER) > printed.index("| scissorhands | 2 |")
    assert f"{out / 'results.json'}" in printed


@pytest.mark.slow  # end to end
def test_demo_is_the_comparison_of_the_digits_configs(tmp_path):
    """The demo's rows are those of ``compare`` on the same configs, methods and seeds."""
    demo, comparison = tmp_path / "demo", tmp_path / "compare"
    common = ["--seeds", "0", "--smoke", "--no-progress"]
    argv = ["demo", "--scenarios", "class0", *common, "--set", "unlearn.lam=0.1"]
    assert cli.main([*argv, "--out", str(demo)]) == 0
    argv = ["compare", "--setting", "digits10_class0", "--methods", "retrain", "scissorhands"]
    argv += [*common, "--set", "methods.scissorhands.lam=0.1", "--no-plot"]
    assert cli.main([*argv, "--out", str(comparison)]) == 0

    def numbers(path):
        rows = json.loads((path / "results.json").read_text())
        return [{k: v for k, v in r.items() if k not in ("rte_s", "versions")} for r in rows]

    mine, theirs = numbers(demo), numbers(comparison)
    assert mine == theirs and mine[-1]["hyperparameters"]["lam"] == 0.1


@pytest.mark.slow  # end to end
def test_digits_retain_is_in_data_set_order_as_the_release_orders_it():
    """The SVC attack's members are the first len(test) retain examples; the authors'
    release takes them in data-set index order (numpy.setdiff1d of data-set indices)."""
    import numpy as np
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


# --------------------------------------------------------- seeds added, settings refused


@pytest.mark.slow
def test_demo_adds_seeds_and_keeps_the_rows_already_there(tmp_path, capsys, monkeypatch):
    d = tmp_path / "d"
    assert cli.main([*DEMO, "--seeds", "0", "--out", str(d)]) == 0
    first = json.loads((d / "results.json").read_text())
    assert cli.main([*DEMO, "--seeds", "1", "--out", str(d)]) == 0
    both = json.loads((d / "results.json").read_text())
    assert [r for r in both if r["seed"] == 0] == first
    assert sorted(r["seed"] for r in both) == [0, 0, 0, 1, 1, 1]
    assert "| scissorhands | 2 | " in capsys.readouterr().out
    # a finished directory: a second identical run keeps every row and redoes nothing
    monkeypatch.setattr(pipe, "fit_resumable", boom(pipe.fit_resumable))
    monkeypatch.setattr(_compare_scenario, "scissorhands", boom(_compare_scenario.scissorhands))
    assert cli.main([*DEMO, "--seeds", "0", "1", "--out", str(d)]) == 0
    assert json.loads((d / "results.json").read_text()) == both
    # other settings are never mixed into the rows, unless --overwrite replaces them
    assert cli.main([*DEMO, "--seeds", "2", "--set", "unlearn.lr=0.01", "--out", str(d)]) == 2
    assert "other hyperparameters" in err_line(capsys)
    assert json.loads((d / "results.json").read_text()) == both
    monkeypatch.undo()
    argv = [*DEMO, "--seeds", "1", "--set", "unlearn.lr=0.01", "--overwrite", "--out", str(d)]
    assert cli.main(argv) == 0
    rows = json.loads((d / "results.json").read_text())
    lrs = {r["seed"]: r["hyperparameters"]["lr"] for r in rows if r["method"] == "scissorhands"}
    assert lrs == {0: 5e-3, 1: 0.01}  # the replaced row; seed 0 was not asked for again


def test_the_demo_flags_that_became_config_values_name_their_set(capsys):
    for flag, fix in (
        (["--lr", "0.01"], "--set unlearn.lr=VALUE"),
        (["--cumulative-memory"], "--set unlearn.cumulative_memory=VALUE"),
        (["--train-epochs", "3"], "--set train.epochs=VALUE --set retrain.epochs=VALUE"),
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(["demo", "--out", "never", *flag])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag[0]}: removed" in err and fix in err, err


def test_cli_reports_bad_input_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--out", str(out), "--set", "unlearn.sparsity=1.5", "--seeds", "0"]
    code = cli.main([*argv, "--scenarios", "random10", "--smoke", "--no-progress"])
    assert code == 2
    assert "--set unlearn.sparsity=1.5: unlearn.sparsity must be" in capsys.readouterr().err
    assert not out.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli.main(["demo", "--out", str(a_file), "--no-progress"]) == 2
    assert "not a directory" in capsys.readouterr().err
