"""``scissorhands compare --setting CONFIG``: the paper-scale pipeline behind the comparison.

Checked against the separate commands: seed 0 of a config must train the same original
as ``scissorhands train`` (bit for bit) and unlearn to the same metrics as ``scissorhands
unlearn`` + ``evaluate``; a resumed comparison must not redo finished work, a
half-trained original continues from its checkpoint, and a CIFAR-10 config runs on tfds
mock data.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import boom

from scissorhands_jax import cli
from scissorhands_jax.baselines import METHODS
from scissorhands_jax.experiment import _compare_scenario
from scissorhands_jax.experiment import pipeline as pipe
from scissorhands_jax.experiment.config import load_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]  # end to end

CONFIGS = Path(__file__).resolve().parents[1] / "scissorhands_jax" / "configs"
DIGITS = str(CONFIGS / "digits10_random10.py")
CIFAR10 = str(CONFIGS / "cifar10_random10.py")
FAST = ["--set", "methods.ft.epochs=1", "--set", "ft.batch_size=64"]


def _rows(out: Path) -> dict[str, dict]:
    return {r["method"]: r for r in json.loads((out / "results.json").read_text())}


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def digits_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmpcfg") / "digits"
    argv = ["compare", "--setting", DIGITS, "--smoke", "--methods", "ft", "scissorhands"]
    assert cli.main([*argv, *FAST, "--out", str(out), "--no-plot", "--no-progress"]) == 0
    return out, argv


def test_config_rows_match_the_train_unlearn_evaluate_commands(digits_compare, tmp_path):
    out, _ = digits_compare
    rows = _rows(out)
    assert list(rows) == ["retrain", "original", "ft", "scissorhands"]
    assert all("error" not in r for r in rows.values())
    assert {r["scenario"] for r in rows.values()} == {"digits10_random10_smoke"}
    # the same config through the separate commands
    run = tmp_path / "run"
    common = [DIGITS, "--smoke", "--no-progress"]
    assert cli.main(["train", *common, "--out", str(run)]) == 0
    assert cli.main(["unlearn", *common, "--run", str(run)]) == 0
    assert cli.main(["evaluate", *common, "--run", str(run)]) == 0
    cfg = load_config(DIGITS, smoke=True)
    split = pipe.build_split(cfg, progress=False)
    model = pipe.build_model(cfg, split.dataset)
    for role in ("original", "retrain"):
        mine = pipe.load_trained(out / "runs" / "seed0", role, cfg, split, model)
        theirs = pipe.load_trained(run, role, cfg, split, model)
        for a, b in zip(_leaves(mine), _leaves(theirs), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        np.load(out / "runs" / "seed0" / "forget_indices.npy"), np.load(run / "forget_indices.npy")
    )
    evaluation = {r["model"]: r for r in json.loads((run / "evaluation.json").read_text())["rows"]}
    for mine, theirs in (("scissorhands", "unlearned"), ("retrain", "retrain")):
        for key in ("UA", "RA", "TA", "MIA_entropy", "MIA_confidence"):
            assert rows[mine][key] == pytest.approx(evaluation[theirs][key], abs=1e-9), key
    # the baselines run with the config's methods section (FT: lr 0.1, batch 64) over
    # their release defaults, plus --set, on the config's data
    assert rows["ft"]["hyperparameters"] == {
        "lr": 0.1,
        "epochs": 1,
        "batch_size": 64,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }
    assert rows["retrain"]["hyperparameters"] == cfg["retrain"]
    assert rows["ft"]["rte_s"] > 0 and rows["retrain"]["avg_gap"] == 0.0


def test_resumed_config_comparison_redoes_nothing(digits_compare, monkeypatch):
    out, argv = digits_compare
    before = _rows(out)
    monkeypatch.setattr(pipe, "fit_resumable", boom(pipe.fit_resumable))
    monkeypatch.setattr(_compare_scenario, "scissorhands", boom(_compare_scenario.scissorhands))
    monkeypatch.setitem(METHODS, "ft", boom(METHODS["ft"]))
    assert cli.main([*argv, *FAST, "--out", str(out), "--no-plot", "--no-progress"]) == 0
    assert _rows(out) == before


def test_changed_config_on_a_resumed_dir_is_refused(digits_compare, capsys):
    out, argv = digits_compare
    args = [*argv, *FAST, "--set", "train.lr=0.2", "--out", str(out), "--no-plot"]
    assert cli.main(args) == 2
    assert "other settings (train.lr)" in capsys.readouterr().err


def test_half_trained_original_continues_from_its_checkpoint(tmp_path):
    """An original stopped at step 20 (as by a crash) is finished, not restarted: the
    result equals an uninterrupted ``scissorhands train``."""
    out = tmp_path / "cmp"
    seed_run = out / "runs" / "seed0"
    common = [DIGITS, "--smoke", "--no-progress"]
    assert cli.main(["train", *common, "--out", str(seed_run), "--until-step", "20"]) == 0
    assert json.loads((seed_run / "original" / "log.json").read_text())["step"] == 20
    argv = ["compare", "--setting", DIGITS, "--smoke", "--methods", "retrain", "--no-plot"]
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 0
    log = json.loads((seed_run / "original" / "log.json").read_text())
    assert [s["to_step"] for s in log["segments"]] == [20, log["total_steps"]]
    full = tmp_path / "full"
    assert cli.main(["train", *common, "--out", str(full), "--only", "original"]) == 0
    cfg = load_config(DIGITS, smoke=True)
    split = pipe.build_split(cfg, progress=False)
    model = pipe.build_model(cfg, split.dataset)
    resumed = pipe.load_trained(seed_run, "original", cfg, split, model)
    straight = pipe.load_trained(full, "original", cfg, split, model)
    for a, b in zip(_leaves(resumed), _leaves(straight), strict=True):
        np.testing.assert_array_equal(a, b)


def test_seeds_draw_other_forget_sets_and_originals(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--setting", DIGITS, "--smoke", "--methods", "retrain", "--seeds", "0", "1"]
    assert cli.main([*argv, "--out", str(out), "--no-plot", "--no-progress"]) == 0
    f0 = np.load(out / "runs" / "seed0" / "forget_indices.npy")
    f1 = np.load(out / "runs" / "seed1" / "forget_indices.npy")
    assert f0.size == f1.size == 143 and not np.array_equal(f0, f1)
    ident = json.loads((out / "runs" / "seed1" / "split.json").read_text())
    assert ident["forget"]["seed"] == 1


def test_cifar10_config_on_mock_data(tmp_path):
    out = tmp_path / "cifar"
    tiny = ["--set", "model.width=4", "--set", "train.epochs=1", "--set", "retrain.epochs=1"]
    argv = ["compare", "--setting", CIFAR10, "--smoke", *tiny, "--methods", "ft", "--no-plot"]
    with tfds.testing.mock_data(num_examples=96, policy=tfds.testing.MockPolicy.USE_CODE):
        assert cli.main([*argv, *FAST, "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out)
    assert list(rows) == ["retrain", "original", "ft"]
    for row in rows.values():
        assert "error" not in row, row.get("error")
        for key in ("UA", "RA", "TA", "MIA_entropy", "MIA_loss"):
            assert 0.0 <= row[key] <= 100.0
    assert (out / "report.md").read_text().count("cifar10_random10_smoke") >= 1


def test_setting_errors_come_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"
    cases = [
        (["--setting", "cifar11"], "unknown setting 'cifar11'"),
        (["--setting", DIGITS, "--set", "unlearn.sparsty=0.9"], "unknown config key"),
        (["--setting", DIGITS, "--set", "methods.ft.lrr=1"], "ft has no hyperparameter(s) ['lrr']"),
        (["--setting", DIGITS, DIGITS], "distinct configs"),
        (["--setting", DIGITS, "--set", "methods.ft.lr=0"], "lr must be a positive number"),
        (["--setting", DIGITS, "--set", "unlearn.sparsity=2.0"], "sparsity"),
    ]
    for extra, message in cases:
        assert cli.main(["compare", *extra, "--out", str(out), "--no-plot"]) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists()


def test_old_method_spelling_warns_and_still_reaches_the_method():
    from scissorhands_jax.commands._set import parse_set
    from scissorhands_jax.commands.compare import CONFIG_SECTIONS

    items = ["ft.lr=0.1", "train.epochs=2", "unlearn.lr=0.01", "methods.ga.lr=0.2"]
    with pytest.warns(DeprecationWarning, match="methods.ft.lr=0.1"):
        got = parse_set(items, sections=CONFIG_SECTIONS)
    assert got.config == ["train.epochs=2", "unlearn.lr=0.01"]
    assert got.methods == {"ft": {"lr": 0.1}, "ga": {"lr": 0.2}}


def test_sigterm_while_training_saves_at_the_step_then_exits_75(tmp_path, monkeypatch, capsys):
    import os
    import signal

    fit = pipe.fit_resumable

    def notice_then_fit(*args, **kwargs):  # the notice arrives as the training starts
        os.kill(os.getpid(), signal.SIGTERM)
        return fit(*args, **kwargs)

    monkeypatch.setattr(pipe, "fit_resumable", notice_then_fit)
    out = tmp_path / "cmp"
    argv = ["compare", "--setting", DIGITS, "--smoke", "--methods", "retrain", "--no-plot"]
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 75
    assert "stopped by SIGTERM" in capsys.readouterr().err
    log = json.loads((out / "runs" / "seed0" / "original" / "log.json").read_text())
    assert log["step"] == 1 and not log["complete"]  # saved at the first step boundary
    monkeypatch.undo()
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 0
    log = json.loads((out / "runs" / "seed0" / "original" / "log.json").read_text())
    assert [s["to_step"] for s in log["segments"]] == [1, log["total_steps"]]
    assert set(_rows(out)) == {"retrain", "original"}
