"""The command line's shared arguments (scissorhands_jax.commands._args): one spelling of
``--set`` for config values and methods' hyperparameters, read once, and refused with
the spelling to use."""

from __future__ import annotations

import pytest
from conftest import DIGITS, err_line

from scissorhands_jax import cli
from scissorhands_jax.commands._set import parse_set

SECTIONS = ("data", "model", "train", "retrain", "unlearn", "eval")


def test_set_reads_config_values_and_method_hyperparameters():
    items = ["unlearn.lr=0.01", "methods.ft.lr=0.02", "methods.be.head=Dense_1"]
    items += ["retrain.epochs=40", "methods.ft.epochs=[1, 2]", "data.forget.kind=class"]
    got = parse_set(items, sections=SECTIONS)
    assert got.config == ["unlearn.lr=0.01", "retrain.epochs=40", "data.forget.kind=class"]
    assert got.methods == {"ft": {"lr": 0.02, "epochs": [1, 2]}, "be": {"head": "Dense_1"}}


def test_set_puts_a_method_held_in_a_config_section_there_in_order():
    items = ["unlearn.lr=0.1", "methods.scissorhands.lr=0.5", "unlearn.epochs=3"]
    got = parse_set(items, sections=SECTIONS, method_sections={"scissorhands": "unlearn"})
    assert got.config == ["unlearn.lr=0.1", "unlearn.lr=0.5", "unlearn.epochs=3"]
    assert got.methods == {}


def test_the_old_method_spelling_works_and_names_the_new_one():
    with pytest.warns(DeprecationWarning, match=r"write --set methods\.salun\.lr=0\.01"):
        got = parse_set(["salun.lr=0.01"], sections=SECTIONS)
    assert got == ([], {"salun": {"lr": 0.01}})


@pytest.mark.parametrize(
    "item", ["unlearn.lr", "=1", "unlearn..lr=1", ".lr=1", "methods.ft=1", "methods.nope.lr=1"]
)
def test_a_malformed_set_is_refused_showing_the_spelling(item):
    with pytest.raises(ValueError, match=r"--set .*methods\.ft\.lr=0\.02"):
        parse_set([item], sections=SECTIONS)


def test_train_refuses_a_method_hyperparameter_naming_compare(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--set", "methods.ft.lr=0.1"]
    assert cli.main(argv) == 2
    err = err_line(capsys)
    assert "methods.ft.lr" in err and "scissorhands compare --methods ft" in err
    assert not out.exists()


def test_unlearn_takes_scissorhands_hyperparameters_as_methods_scissorhands(tmp_path, capsys):
    missing = tmp_path / "run"
    argv = ["unlearn", DIGITS, "--smoke", "--run", str(missing)]
    assert cli.main([*argv, "--set", "methods.scissorhands.lr=-1"]) == 2
    assert "unlearn.lr must be > 0, got -1" in err_line(capsys)  # checked as its section
    assert cli.main([*argv, "--set", "scissorhands.lr=0.01"]) == 2  # the old spelling
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "write --set methods.scissorhands.lr=0.01" in err[0]
    assert "does not exist" in err[1]  # the config was read: on to the run directory
    assert not missing.exists()
