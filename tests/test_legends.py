"""Every printed table has a legend that names each of its columns."""

from __future__ import annotations

import pytest

from scissorhands_jax.commands import _legends, evaluate
from scissorhands_jax.experiment import generation
from scissorhands_jax.experiment import report as _report


@pytest.mark.parametrize(
    "columns, legend",
    [
        (_report.table_columns("entropy"), _legends.CLASSIFIER),  # demo and compare
        (evaluate.COLUMNS, _legends.CLASSIFIER),
        (generation.COLUMNS, _legends.DIFFUSION),
        (("forget share", "forget prob", "other acc", "Frechet", "time"), _legends.DIFFUSION),
    ],
)
def test_legend_names_every_column_and_the_direction(columns, legend):
    text = legend.lower()
    for column in columns:
        assert column.lower().replace("_", " ") in text.replace("_", " "), column
    assert "lower is better" in text and "retrain" in text


def test_under_puts_the_legend_after_the_table():
    assert _legends.under("| a |", "a: what a is") == "| a |\n\na: what a is"
