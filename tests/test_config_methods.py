"""The ``methods`` section of the classifier configs: what a comparison runs each method
with (:func:`scissorhands_jax.experiment.config.methods_of`), its ``--set`` dialect and its
rules (:func:`scissorhands_jax.experiment.rules.check_methods`)."""

from __future__ import annotations

import pytest

from scissorhands_jax.commands import compare as compare_command
from scissorhands_jax.experiment import compare
from scissorhands_jax.experiment.config import load_config, methods_of

# FT's, GA's and SCRUB's settings written out by hand: the release defaults (momentum 0.9,
# coupled weight decay 5e-4) under the digits comparison's tuned values.
DIGITS_FT = {"lr": 0.1, "epochs": 10, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4}
DIGITS_GA = {**DIGITS_FT, "lr": 0.03, "epochs": 5}
RELEASE_FT = {"lr": 0.01, "epochs": 10, "batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4}


@pytest.mark.parametrize("name", ["digits10_random10", "digits10_class0"])
def test_the_digits_configs_hold_the_digits_hyperparameters(name):
    methods = methods_of(load_config(name))
    assert methods["ft"] == DIGITS_FT  # the demo's comparison ran FT at lr 0.1, not 0.01
    assert methods["ga"] == DIGITS_GA
    assert methods["iu"]["alpha"] == 100.0 and methods["iu"]["fisher_examples"] == 256
    assert (methods["scrub"]["max_epochs"], methods["scrub"]["forget_batch_size"]) == (2, 32)
    shs = methods["scissorhands"]  # the unlearn section, seed and augmentation left out
    assert (shs["lr"], shs["batch_size"], shs["sparsity"], shs["lam"]) == (5e-3, 64, 0.97, 0.05)
    assert shs["eligible"] == "all_but_first_conv" and "seed" not in shs and "augment" not in shs
    assert "retrain" not in methods  # Retrain runs the retrain section


def test_a_config_without_a_methods_section_runs_the_release_defaults():
    methods = methods_of(load_config("cifar10_random10"))
    assert methods["ft"] == RELEASE_FT
    assert methods["scissorhands"]["eligible"] == "layer3,layer4,fc"


def test_set_overrides_one_hyperparameter_and_keeps_the_others():
    cfg = load_config("digits10_class0", overrides=["methods.ft.lr=0.02"])
    assert methods_of(cfg)["ft"] == {**DIGITS_FT, "lr": 0.02}
    cfg = load_config("digits10_class0", overrides=["methods.scissorhands.lr=1.5e-3"])
    assert methods_of(cfg)["scissorhands"]["lr"] == 1.5e-3
    assert cfg["unlearn"]["lr"] == 5e-3  # `scissorhands unlearn` keeps the unlearn section
    cfg = load_config("cifar10_random10", overrides=["methods.ga.epochs=2"])
    assert methods_of(cfg)["ga"]["epochs"] == 2


@pytest.mark.parametrize(
    "item, message",
    [
        ("methods.ft.lrr=1", "--set methods.ft.lrr=1: methods.ft: ft has no hyperparameter(s)"),
        ("methods.ft.lr=-1", "lr must be a positive number, got -1"),
        ("methods.ga.epochs=1.5", "epochs"),
        ("methods.sgd.lr=1", "unknown method 'methods.sgd'; known: ft, ga,"),
        ("methods.retrain.lr=1", "set retrain.lr=..."),
        ("methods.scissorhands.sparsity=2.0", "sparsity"),
        ("methods.scissorhands.eligible='('", "eligible must be a preset name or a valid regex"),
        ("methods.ft=3", "methods.ft must be a dict of hyperparameters, got 3"),
        ("methods=[1]", "methods must be a dict of dicts"),
    ],
)
def test_bad_methods_are_refused_naming_their_source(item, message):
    with pytest.raises(ValueError, match="^--set ") as info:
        load_config("digits10_class0", overrides=[item])
    assert message in str(info.value)


def test_a_bad_method_in_a_config_file_names_the_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "CONFIG = {'data': {'name': 'digits10'}, 'model': {'name': 'digits_cnn'},\n"
        "          'methods': {'salun': {'ratio': 1.5}}}\n"
    )
    with pytest.raises(ValueError, match=f"^{path}: methods.salun: "):
        load_config(path)


def test_the_demo_compares_the_digits_configs():
    assert compare_command.DIGITS == compare.DIGITS
    from scissorhands_jax.experiment.config import config_names

    assert set(compare.DIGITS) <= set(config_names())
