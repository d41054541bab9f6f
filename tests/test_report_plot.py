"""report.png is drawn with matplotlib's object API: the caller's backend and pyplot's
figures are left as they were (a notebook's inline plots keep working)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scissorhands_jax.experiment import report

ROWS = Path(__file__).resolve().parents[1] / "experiments/results/digits10_compare/results.json"


def test_plot_report_leaves_the_backend_and_pyplot_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    plt = pytest.importorskip("matplotlib.pyplot")
    before = matplotlib.get_backend()
    user_figure = plt.figure()
    rows = json.loads(ROWS.read_text())
    report.plot_report(
        rows, tmp_path / "report.png", mia_feature="entropy", scenarios=("random10", "class0")
    )
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == before
    assert plt.get_fignums() == [user_figure.number]  # no figure of ours left in pyplot
    assert plt.gcf() is user_figure
    plt.close(user_figure)


def test_every_panel_of_the_report_reads_on_its_own():
    pytest.importorskip("matplotlib")
    rows = json.loads(ROWS.read_text())
    fig = report.report_figure(rows, mia_feature="entropy", scenarios=("random10", "class0"))
    assert "Retrain" in fig.get_suptitle() and "5 seeds" in fig.get_suptitle()
    axes = fig.get_axes()
    assert len(axes) == 4
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    assert {ax.get_title().split(":")[0] for ax in axes} == {"random10", "class0"}


def test_one_markdown_table_writer_by_hand():
    table = report.markdown_table(["method", "UA"], [["ft", "1.0"], ("ga", "–")])
    assert table == "| method | UA |\n|---|---|\n| ft | 1.0 |\n| ga | – |"
    assert report.markdown_table(["a"], []) == "| a |\n|---|"
    with pytest.raises(ValueError, match="a table row has 1 cells for 2 columns"):
        report.markdown_table(["method", "UA"], [["ft"]])


def test_the_audit_report_says_what_each_protocol_is_for():
    rows = [
        {"protocol": "p", "method": "original", "n_models": 4, "ulira_accuracy": 0.9},
        {"protocol": "p", "method": "retrain", "n_models": 4, "ulira_accuracy": 0.5},
    ]
    text = report.audit_markdown(rows, "scissorhands audit", {"p": "a line on p"})
    assert "## p\n\na line on p. 4 models." in text
    assert "| original | 0.900 | – | – |" in text  # a missing value is a dash, not an error
    assert "## p\n\n4 models." in report.audit_markdown(rows)  # no line: none written
