"""Config files and their rules (scissorhands_jax.experiment.config, .rules): every key
has a rule that names the library's choices, values are checked with types and ranges
once, on load, before a command makes its output directory, and a config may import its
family base from its own folder."""

from __future__ import annotations

import sys

import pytest
from conftest import DDPM, DIGITS, err_line

from scissorhands_jax import cli
from scissorhands_jax.experiment.config import load_config


def test_the_config_rules_name_the_library_choices():
    from scissorhands_jax.data.splits import FORGET_KINDS
    from scissorhands_jax.diffusion.sampler import SAMPLERS
    from scissorhands_jax.diffusion.schedule import BETA_SCHEDULES
    from scissorhands_jax.diffusion.unlearn import OBJECTIVES
    from scissorhands_jax.experiment import pipeline, rules
    from scissorhands_jax.experiment._generation_setup import _JUDGES
    from scissorhands_jax.sd import ESD_VARIANTS

    assert set(rules.CLASSIFIERS) == set(pipeline.MODELS) == set(_JUDGES)
    assert rules.FORGET_KINDS == FORGET_KINDS and rules.SAMPLERS == SAMPLERS
    assert rules.BETA_SCHEDULES == BETA_SCHEDULES and rules.OBJECTIVES == OBJECTIVES
    assert rules.ESD_VARIANTS == ESD_VARIANTS


def test_every_config_key_has_a_rule_and_every_default_passes_it():
    from scissorhands_jax._settings import GROUP_OF
    from scissorhands_jax.experiment import rules
    from scissorhands_jax.experiment.config import SCHEMAS

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    for kind, schema in SCHEMAS.items():
        known = set(leaves(rules.RULES[kind]))
        for name in leaves(schema):
            section, _, key = name.partition(".")
            method = rules.METHOD_SECTION.get(kind)
            assert name in known or (section == method and key in GROUP_OF), name
        rules.validate({**schema, "data": {**schema["data"], "name": "x"}}, kind)


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("unlearn.lr=5e-3x", r"unlearn.lr must be a number .* got '5e-3x'"),
        ("unlearn.epochs=2.5", "unlearn.epochs must be an integer"),
        ("unlearn.augment=1", "unlearn.augment must be true or false"),
        ("unlearn.eligible=0.5", "unlearn.eligible must be a string"),
    ],
)
def test_config_overrides_are_type_checked_at_once(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_config("cifar10_random10", overrides=[text])
    good = load_config("cifar10_random10", overrides=["unlearn.lr=5e-3"])
    assert good["unlearn"]["lr"] == 5e-3


@pytest.mark.parametrize(
    "item,name",
    [
        ("train.keep=0", "train.keep"),
        ("train.keep=1.5", "train.keep"),
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("train.lr=abc", "train.lr"),
        ("train.lr=-0.1", "train.lr"),
        ("train.milestones=5", "train.milestones"),
        ("train.milestones=[1.5]", "train.milestones"),
        ("data.val_fraction=abc", "data.val_fraction"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("data.limit_train=0", "data.limit_train"),
        ("unlearn.margin=nan", "unlearn.margin"),
        ("unlearn.margin=1e999", "unlearn.margin"),
        ("unlearn.eligible=(", "unlearn.eligible"),
        ("retrain.keep=0", "retrain.keep"),
        ("train.seed=18446744073709551616", "train.seed"),  # was an OverflowError traceback
        ("train.seed=-1", "train.seed"),
        ("data.split_seed=4294967296", "data.split_seed"),
        ("unlearn.seed=4294967296", "unlearn.seed"),
        ("train.momentum=1.0", "train.momentum"),  # was only >= 0 (unlearn's: < 1)
        ("retrain.momentum=1.5", "retrain.momentum"),
        ("model.name=bogus", "model.name"),
        ("data.forget={'kind': 'clas', 'classes': [0]}", "data.forget.kind"),
    ],
)
def test_bad_values_are_one_line_before_the_directory_exists(tmp_path, capsys, item, name):
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    assert cli.main([*argv, "--set", item, "--no-progress"]) == 2
    err = err_line(capsys)
    assert f"--set {item}" in err and f"{name} must be" in err
    assert not out.exists()


@pytest.mark.parametrize("item", ["train.keep=0", "classifier.keep=0", "train.steps=0"])
def test_diffusion_train_refuses_a_run_that_keeps_nothing(tmp_path, capsys, item):
    out = tmp_path / "o"
    argv = ["diffusion-train", DDPM, "--smoke", "--out", str(out), "--set", item]
    assert cli.main([*argv, "--no-progress"]) == 2
    assert item.split("=")[0] in err_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "item,name",
    [
        ("classifier.model=bogus", "classifier.model"),  # was refused after both DDPMs trained
        ("classifier.momentum=1.0", "classifier.momentum"),
        ("classifier.seed=18446744073709551616", "classifier.seed"),
        ("sample.method=ddimm", "sample.method"),
        ("diffusion.schedule.kind=cosin", "diffusion.schedule.kind"),
        ("scissorhands.projection=gemm", "scissorhands.projection"),
        ("scissorhands.reinit=zeros", "scissorhands.reinit"),
        ("salun.anchor=nxt", "salun.anchor"),
        ("scissorhands.objective=anchor", "scissorhands.anchor"),  # anchor None: no anchor
    ],
)
def test_diffusion_settings_of_every_stage_are_refused_before_training(
    tmp_path, capsys, item, name
):
    out = tmp_path / "o"
    argv = ["diffusion-train", DDPM, "--smoke", "--out", str(out), "--set", item]
    assert cli.main([*argv, "--no-progress"]) == 2
    err = err_line(capsys)
    assert f"--set {item}" in err and f"{name} must be" in err
    assert not out.exists()


def test_a_config_file_value_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "CONFIG = {'data': {'name': 'digits10'}, 'model': {'name': 'digits_cnn'},\n"
        "          'train': {'epochs': 1}, 'retrain': {'epochs': 1},\n"
        "          'unlearn': {'margin': float('nan')}}\n"
    )
    assert cli.main(["train", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = err_line(capsys)
    assert err.count(str(bad)) == 1 and "unlearn.margin must be a finite number" in err


def test_a_config_imports_its_family_base_from_its_own_folder(tmp_path):
    for folder, lr in (("a", 0.5), ("b", 0.25)):  # two families, one module name
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "_family.py").write_text(
            f"def cell(name):\n    return {{'data': {{'name': name}}, 'unlearn': {{'lr': {lr}}}}}\n"
        )
        (tmp_path / folder / "one.py").write_text(
            "from _family import cell\n\nCONFIG = cell('cifar10')\n"
        )
    path_before = list(sys.path)
    assert load_config(tmp_path / "a" / "one.py")["unlearn"]["lr"] == 0.5
    assert load_config(tmp_path / "b" / "one.py")["unlearn"]["lr"] == 0.25
    assert sys.path == path_before and "_family" not in sys.modules
    (tmp_path / "a" / "two.py").write_text("from _missing import cell\n")
    with pytest.raises(ValueError, match="two.py failed to load: ModuleNotFoundError"):
        load_config(tmp_path / "a" / "two.py")
    assert sys.path == path_before
