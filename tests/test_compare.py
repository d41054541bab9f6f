"""``scissorhands compare`` end to end on the digits class-0 config (two methods, one seed,
its SMOKE schedules), its resume (rows of other hyperparameters or another MIA), its
errors, and the report's tables against hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import COMPARE, DEMO, boom, err_line

from scissorhands_jax import cli
from scissorhands_jax.baselines import METHODS
from scissorhands_jax.commands._set import parse_set
from scissorhands_jax.commands.compare import CONFIG_SECTIONS
from scissorhands_jax.experiment import pipeline as pipe
from scissorhands_jax.experiment import report
from scissorhands_jax.metrics import MIA_FEATURES

DIGITS_CONFIG = str(
    Path(__file__).resolve().parents[1] / "scissorhands_jax/configs/digits10_random10.py"
)
METRICS = {"UA", "RA", "TA", "MIA_loss", "ToW", "avg_gap", "rte_s"} | {
    f"MIA_{f}" for f in MIA_FEATURES
}
BASE = [
    "compare",
    "--setting",
    "digits10_class0",
    "--smoke",
    "--seeds",
    "0",
    "--methods",
    "ft",
    "ga",
    "--set",
    "methods.ft.epochs=1",
    "--set",
    "methods.ga.epochs=1",
    "--no-progress",
]


def _rows(out):
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One run in which GA diverges (a huge lr): a failed row, the others finished."""
    out = tmp_path_factory.mktemp("compare") / "digits"
    code = cli.main([*BASE, "--out", str(out), "--set", "methods.ga.lr=1e6"])
    assert code == 0
    return out


@pytest.mark.slow
def test_compare_writes_every_file_and_metric(first_run):
    rows = _rows(first_run)
    scenario = "digits10_class0_smoke"
    assert [(r["scenario"], r["method"], r["seed"]) for r in rows] == [
        (scenario, "retrain", 0),
        (scenario, "original", 0),
        (scenario, "ft", 0),
        (scenario, "ga", 0),
    ]
    ok = [r for r in rows if "error" not in r]
    assert len(ok) == 3
    for row in ok:
        assert METRICS <= set(row)
        assert row["avg_gap_mia"] == "MIA_entropy"
        for key in METRICS - {"ToW", "avg_gap", "rte_s"}:
            assert 0.0 <= row[key] <= 100.0
        assert 0.0 <= row["ToW"] <= 1.0 and row["rte_s"] > 0
    retrain = rows[0]
    assert retrain["avg_gap"] == 0.0 and retrain["ToW"] == 1.0
    assert retrain["UA"] == 100.0  # class 0 never reached the retrained model
    # the config's methods section (FT's digits lr 0.1, batch 64) over the release
    # defaults (momentum 0.9, weight decay 5e-4), then --set
    assert rows[2]["hyperparameters"] == {
        "lr": 0.1,
        "epochs": 1,
        "batch_size": 64,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }
    for row in rows:  # what made each number, failed rows too
        assert row["versions"]["jax"] == jax.__version__ and "numpy" in row["versions"]
    failed = rows[3]
    assert failed["error"].startswith("FloatingPointError") and "UA" not in failed
    csv_lines = (first_run / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("scenario,method,seed,UA")
    report = (first_run / "report.md").read_text()
    assert f"| {scenario} | n | UA |" in report and "| ft | 1 |" in report
    assert "## Failed rows" in report and f"{scenario} / ga / seed 0: FloatingPointError" in report
    assert (first_run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (first_run / "runs" / "seed0" / "original" / "log.json").exists()


@pytest.mark.slow
def test_compare_resumes_without_redoing_finished_rows(first_run, monkeypatch):
    before = {r["method"]: r for r in _rows(first_run)}
    # Only GA failed: training, Retrain and FT must not run again.
    monkeypatch.setattr(pipe, "fit_resumable", boom(pipe.fit_resumable))
    monkeypatch.setitem(METHODS, "ft", boom(METHODS["ft"]))
    assert cli.main([*BASE, "--out", str(first_run)]) == 0
    after = {r["method"]: r for r in _rows(first_run)}
    for name in ("retrain", "original", "ft"):
        assert after[name] == before[name]
    assert "error" not in after["ga"] and after["ga"]["hyperparameters"]["lr"] == 0.03
    # Everything finished: a third run does no work at all.
    monkeypatch.setitem(METHODS, "ga", boom(METHODS["ga"]))
    assert cli.main([*BASE, "--out", str(first_run)]) == 0
    assert _rows(first_run) == list(after.values())


def test_errors_come_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main([*BASE, "--out", str(out), "--set", "methods.ft.momentun=0.5"]) == 2
    assert "ft has no hyperparameter(s) ['momentun']" in capsys.readouterr().err
    assert cli.main([*BASE, "--out", str(out), "--set", "methods.ga.lr=-1"]) == 2
    assert "lr must be a positive number, got -1" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main([*BASE, "--out", str(out), "--set", "ftlr=1"]) == 2
    assert cli.main([*BASE, "--out", str(out), "--set", "methods.retrain.lr=1"]) == 2
    assert "set retrain.lr=... " in capsys.readouterr().err  # the retrain section's schedule
    assert cli.main([*BASE, "--out", str(out), "--set", "methods.ft.momentun=0.5"]) == 2
    assert (
        "methods.ft.momentun=0.5: ft has no hyperparameter(s) ['momentun']"
        in capsys.readouterr().err
    )
    assert cli.main([*BASE, "--out", str(out), "--set", "methods.sgd.lr=1"]) == 2
    assert (
        "'methods.sgd.lr=1': write methods.METHOD.KEY=VALUE with METHOD one of"
        in capsys.readouterr().err
    )
    assert not out.exists()


@pytest.mark.slow
def test_changed_training_on_a_resumed_dir_is_refused(first_run, capsys):
    args = [*BASE, "--out", str(first_run), "--set", "train.epochs=3"]
    assert cli.main(args) == 2
    assert "other settings (train.epochs)" in capsys.readouterr().err


def test_compare_reads_set_with_the_one_parser():
    items = ["methods.ft.lr=0.02", "methods.be.head=Dense_1", "train.epochs=2"]
    items.append("methods.scissorhands.cumulative_memory=True")
    got = parse_set(items, sections=CONFIG_SECTIONS)
    assert got.config == ["train.epochs=2"]
    assert got.methods == {
        "ft": {"lr": 0.02},
        "be": {"head": "Dense_1"},
        "scissorhands": {"cumulative_memory": True},
    }


def _row(method, seed, ua, gap, tow=0.5):
    return {
        "scenario": "s",
        "method": method,
        "seed": seed,
        "UA": ua,
        "RA": 99.0,
        "TA": 90.0,
        "MIA_entropy": 10.0,
        "MIA_confidence": 10.0,
        "MIA_loss": 10.0,
        "ToW": tow,
        "avg_gap": gap,
        "rte_s": 1.0,
    }


def test_report_marks_the_best_per_column_and_ranks_by_hand():
    rows = [
        _row("retrain", 0, 10.0, 0.0, 1.0),
        _row("retrain", 1, 20.0, 0.0, 1.0),
        _row("ft", 0, 0.0, 4.0, 0.8),
        _row("ft", 1, 0.0, 6.0, 0.8),
        _row("scissorhands", 0, 12.0, 3.0, 0.9),
        _row("scissorhands", 1, 22.0, 7.0, 0.7),
        {"scenario": "s", "method": "ga", "seed": 0, "error": "FloatingPointError: nan"},
    ]
    table = report.markdown_tables(rows, mia_feature="entropy", scenarios=["s"])
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    # UA: retrain 15 ± 5; scissorhands 17 is closer than ft 0 -> bold
    assert "**17.00 ± 5.00**" in lines["scissorhands"] and "0.00 ± 0.00 |" in lines["ft"]
    # Avg. Gap: both 5.00 -> a tie, both bold; ToW: ft 0.8 = scissorhands 0.8 -> both bold
    assert lines["ft"].count("**5.00 ± 1.00**") == 1 and "**5.00 ± 2.00**" in lines["scissorhands"]
    assert "| ga | 0 (1 failed) |" in table
    text = report.ranking(rows, "s")
    assert "scissorhands ranks" in text and "| ft | 5.00 | 5.00 | 1/2 seeds |" in text


def test_gap_components_sum_to_the_avg_gap_by_hand():
    ref0 = {**_row("retrain", 0, 10.0, 0.0), "MIA_entropy": 20.0}
    ref1 = {**_row("retrain", 1, 20.0, 0.0), "MIA_entropy": 40.0}
    row0 = {**_row("ft", 0, 14.0, 0.0), "RA": 97.0, "MIA_entropy": 30.0}
    row1 = {**_row("ft", 1, 20.0, 0.0), "TA": 80.0, "MIA_entropy": 40.0}
    for row in (row0, row1):
        row["avg_gap_mia"] = "MIA_entropy"
    parts = report.gap_components([ref0, ref1, row0, row1], "s")
    assert parts["ft"] == pytest.approx({"UA": 0.5, "RA": 0.25, "TA": 1.25, "MIA": 1.25})
    # seed 0: (4 + 2 + 0 + 10) / 4 = 4; seed 1: (0 + 0 + 10 + 0) / 4 = 2.5
    assert sum(parts["ft"].values()) == pytest.approx((4 + 2.5) / 2)


def test_scissorhands_settings_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"  # was: exit 0 with an error row (after training the models)
    argv = [*BASE, "--methods", "scissorhands", "--out", str(out)]
    assert cli.main([*argv, "--set", "methods.scissorhands.sparsity=2", "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--set scissorhands.sparsity=2" in err and "sparsity" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_a_damaged_results_file_is_one_line_before_any_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipe, "fit_resumable", boom(pipe.fit_resumable))
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "results.json").write_text('[{"scenario": "class0", "meth')
    assert cli.main([*BASE, "--out", str(out), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{out / 'results.json'} is damaged (not JSON" in err and "delete it" in err


def test_a_failed_data_load_records_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"  # was: setting.json of the failed data kept, the fix refused
    argv = ["compare", "--setting", DIGITS_CONFIG, "--smoke", "--set", "data.name='cifar10'"]
    argv += ["--data-dir", str(tmp_path / "no_data"), "--no-plot", "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    assert "not prepared" in capsys.readouterr().err
    assert not out.exists()


def test_a_comparison_in_an_audit_directory_says_whose_it_is(tmp_path, capsys):
    out = tmp_path / "audit"
    out.mkdir()
    record = {"protocols": {}, "shadows": 16, "seed": 0, "backend": ["auto", "cpu"]}
    (out / "setting.json").write_text(json.dumps(record))
    argv = ["compare", "--setting", DIGITS_CONFIG, "--smoke", "--no-plot", "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not record a comparison" in err and "another command" in err
    assert json.loads((out / "setting.json").read_text()) == record


# --------------------------- refusals, and rows kept or replaced on a resumed comparison


def test_method_values_and_repeated_seeds_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main([*COMPARE, "--out", str(out), "--set", "methods.ft.lr=abc"]) == 2
    assert "ft.lr" in err_line(capsys)
    assert cli.main([*COMPARE, "--out", str(out), "--set", "methods.ft.epochs=1.5"]) == 2
    assert "ft.epochs" in err_line(capsys)
    assert cli.main([*DEMO, "--out", str(out), "--seeds", "0", "0"]) == 2
    assert "distinct" in err_line(capsys)
    assert not out.exists()


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("comparison") / "cmp"
    assert cli.main([*COMPARE, "--methods", "ft", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_a_resumed_comparison_with_another_mia_recomputes_the_gap(comparison, monkeypatch):
    before = json.loads((comparison / "results.json").read_text())
    assert {r["avg_gap_mia"] for r in before} == {"MIA_entropy"}
    monkeypatch.setattr(pipe, "fit_resumable", boom(pipe.fit_resumable))
    for name in ("retrain", "ft"):
        monkeypatch.setitem(METHODS, name, boom(METHODS[name]))
    argv = [*COMPARE, "--methods", "ft", "--out", str(comparison), "--mia-feature", "loss"]
    assert cli.main(argv) == 0
    rows = {r["method"]: r for r in json.loads((comparison / "results.json").read_text())}
    ref = rows["retrain"]
    for row in rows.values():  # the gap by hand, over UA, RA, TA and the loss MIA
        keys = ("UA", "RA", "TA", "MIA_loss")
        want = np.mean([abs(row[k] - ref[k]) for k in keys])
        assert row["avg_gap_mia"] == "MIA_loss" and row["avg_gap"] == pytest.approx(want)
    assert rows["ft"]["avg_gap"] != pytest.approx(before[2]["avg_gap"])  # it did change
    report = (comparison / "report.md").read_text()
    assert "Avg. Gap (MIA_loss)" in report and "Avg. Gap (MIA_entropy)" not in report


@pytest.mark.slow
def test_finished_rows_of_other_hyperparameters_need_overwrite(comparison, capsys):
    kept = json.loads((comparison / "results.json").read_text())
    argv = [*COMPARE, "--methods", "ft", "--out", str(comparison), "--set", "methods.ft.lr=0.02"]
    assert cli.main(argv) == 2
    err = err_line(capsys)
    assert "other hyperparameters" in err and "--overwrite" in err
    assert json.loads((comparison / "results.json").read_text()) == kept
    assert cli.main([*argv, "--overwrite"]) == 0
    rows = {r["method"]: r for r in json.loads((comparison / "results.json").read_text())}
    assert rows["ft"]["hyperparameters"]["lr"] == 0.02


def test_a_report_never_names_another_mia_than_its_rows(tmp_path):
    from scissorhands_jax.experiment import report

    row = {"scenario": "s", "method": "ft", "seed": 0, "UA": 1.0, "RA": 1.0, "TA": 1.0}
    row |= {"avg_gap": 1.0, "avg_gap_mia": "MIA_entropy"}
    with pytest.raises(ValueError, match="MIA_entropy"):
        report.write_report([row], tmp_path, mia_feature="loss", scenarios=["s"], plot=False)
    assert not (tmp_path / "report.md").exists()
