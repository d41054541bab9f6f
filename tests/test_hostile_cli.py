"""The command line under careless or hostile use: nothing lost, nothing silently wrong.

Each test is one case of a sweep of bad inputs and bad timing (a setting out of range,
two commands on one directory, a killed holder, a resumed run with other settings, a
damaged cache or checkpoint) and asserts the clear error or the preserved data.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from scissorhands_jax import cli
from scissorhands_jax.baselines import METHODS
from scissorhands_jax.checkpoint import Checkpoints
from scissorhands_jax.experiment import compare
from scissorhands_jax.experiment import pipeline as pipe
from scissorhands_jax.experiment.rundir import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "scissorhands_jax" / "configs"
DIGITS = str(CONFIGS / "digits10_random10.py")
DDPM = str(CONFIGS / "digits_ddpm_class0.py")
# a digits comparison of seconds: one config, one seed, its SMOKE schedules, one epoch
COMPARE = ["compare", "--setting", "digits10_class0", "--smoke", "--seeds", "0"]
COMPARE += [
    "--set",
    "methods.ft.epochs=1",
    "--set",
    "methods.ga.epochs=1",
    "--no-plot",
    "--no-progress",
]
DEMO = ["demo", "--scenarios", "class0", "--smoke", "--no-progress"]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _boom(fn):
    """``fn``'s signature, but no work: finished work must not run again."""

    @functools.wraps(fn)
    def boom(*args, **kwargs):
        raise AssertionError("finished work was redone")

    return boom


# -- --set: one spelling for config values and methods' hyperparameters

SECTIONS = ("data", "model", "train", "retrain", "unlearn", "eval")


def test_set_reads_config_values_and_method_hyperparameters():
    from scissorhands_jax.commands._set import parse_set

    items = ["unlearn.lr=0.01", "methods.ft.lr=0.02", "methods.be.head=Dense_1"]
    items += ["retrain.epochs=40", "methods.ft.epochs=[1, 2]", "data.forget.kind=class"]
    got = parse_set(items, sections=SECTIONS)
    assert got.config == ["unlearn.lr=0.01", "retrain.epochs=40", "data.forget.kind=class"]
    assert got.methods == {"ft": {"lr": 0.02, "epochs": [1, 2]}, "be": {"head": "Dense_1"}}


def test_set_puts_a_method_held_in_a_config_section_there_in_order():
    from scissorhands_jax.commands._set import parse_set

    items = ["unlearn.lr=0.1", "methods.scissorhands.lr=0.5", "unlearn.epochs=3"]
    got = parse_set(items, sections=SECTIONS, method_sections={"scissorhands": "unlearn"})
    assert got.config == ["unlearn.lr=0.1", "unlearn.lr=0.5", "unlearn.epochs=3"]
    assert got.methods == {}


def test_the_old_method_spelling_works_and_names_the_new_one():
    from scissorhands_jax.commands._set import parse_set

    with pytest.warns(DeprecationWarning, match=r"write --set methods\.salun\.lr=0\.01"):
        got = parse_set(["salun.lr=0.01"], sections=SECTIONS)
    assert got == ([], {"salun": {"lr": 0.01}})


@pytest.mark.parametrize(
    "item", ["unlearn.lr", "=1", "unlearn..lr=1", ".lr=1", "methods.ft=1", "methods.nope.lr=1"]
)
def test_a_malformed_set_is_refused_showing_the_spelling(item):
    from scissorhands_jax.commands._set import parse_set

    with pytest.raises(ValueError, match=r"--set .*methods\.ft\.lr=0\.02"):
        parse_set([item], sections=SECTIONS)


def test_train_refuses_a_method_hyperparameter_naming_compare(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--set", "methods.ft.lr=0.1"]
    assert cli.main(argv) == 2
    err = _err_line(capsys)
    assert "methods.ft.lr" in err and "scissorhands compare --methods ft" in err
    assert not out.exists()


def test_unlearn_takes_scissorhands_hyperparameters_as_methods_scissorhands(tmp_path, capsys):
    missing = tmp_path / "run"
    argv = ["unlearn", DIGITS, "--smoke", "--run", str(missing)]
    assert cli.main([*argv, "--set", "methods.scissorhands.lr=-1"]) == 2
    assert "unlearn.lr must be > 0, got -1" in _err_line(capsys)  # checked as its section
    assert cli.main([*argv, "--set", "scissorhands.lr=0.01"]) == 2  # the old spelling
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "write --set methods.scissorhands.lr=0.01" in err[0]
    assert "does not exist" in err[1]  # the config was read: on to the run directory
    assert not missing.exists()


# -- settings: checked once, with types and ranges, before the output directory exists


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
    err = _err_line(capsys)
    assert f"--set {item}" in err and f"{name} must be" in err
    assert not out.exists()


@pytest.mark.parametrize("item", ["train.keep=0", "classifier.keep=0", "train.steps=0"])
def test_diffusion_train_refuses_a_run_that_keeps_nothing(tmp_path, capsys, item):
    out = tmp_path / "o"
    argv = ["diffusion-train", DDPM, "--smoke", "--out", str(out), "--set", item]
    assert cli.main([*argv, "--no-progress"]) == 2
    assert item.split("=")[0] in _err_line(capsys)
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
    err = _err_line(capsys)
    assert f"--set {item}" in err and f"{name} must be" in err
    assert not out.exists()


def test_the_config_rules_name_the_library_choices():
    from scissorhands_jax.data.splits import FORGET_KINDS
    from scissorhands_jax.diffusion.sampler import SAMPLERS
    from scissorhands_jax.diffusion.schedule import BETA_SCHEDULES
    from scissorhands_jax.diffusion.unlearn import OBJECTIVES
    from scissorhands_jax.experiment import pipeline, rules
    from scissorhands_jax.experiment._generation_setup import _JUDGES

    assert set(rules.CLASSIFIERS) == set(pipeline.MODELS) == set(_JUDGES)
    assert rules.FORGET_KINDS == FORGET_KINDS and rules.SAMPLERS == SAMPLERS
    assert rules.BETA_SCHEDULES == BETA_SCHEDULES and rules.OBJECTIVES == OBJECTIVES


def test_the_seed_bound_is_the_same_on_the_command_line_in_configs_and_in_the_library():
    import argparse

    from scissorhands_jax._seed import check_seed
    from scissorhands_jax.commands import _args
    from scissorhands_jax.experiment import rules

    largest = 2**31 - 1  # the bound by hand: 31 bits
    assert _args.seed(str(largest)) == largest and check_seed("seed", largest) == largest
    assert rules.SEED.ok(largest)
    with pytest.raises(argparse.ArgumentTypeError, match=r"2\*\*31"):
        _args.seed(str(largest + 1))
    with pytest.raises(ValueError):
        check_seed("seed", largest + 1)
    assert not rules.SEED.ok(largest + 1)


def test_seeds_are_what_the_generators_take():
    import jax

    largest = 2**31 - 1  # seed + offsets in the thousands stay distinct 32-bit keys
    assert rules_ok("train", "seed", largest) and not rules_ok("train", "seed", largest + 1)
    jax.random.key(largest)  # the largest allowed seed is a valid key and numpy seed
    np.random.default_rng(largest)


def rules_ok(section: str, key: str, value) -> bool:
    from scissorhands_jax.experiment.rules import CLASSIFIER_RULES

    return CLASSIFIER_RULES[section][key].ok(value)


def test_labels_that_do_not_fit_the_model_are_refused_before_training(tmp_path, capsys):
    out = tmp_path / "o"  # was "loss is nan; lower the learning rate" after training began
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    assert cli.main([*argv, "--set", "model.num_classes=2", "--no-progress"]) == 2
    err = _err_line(capsys)
    assert "model.num_classes=2 is too few" in err and "labels run 0..9" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["unlearn", "evaluate"])
def test_a_run_argument_that_is_a_file_is_said_to_be_one(tmp_path, capsys, command):
    a_file = tmp_path / "results.json"  # was: "train one first" (which fails on a file) /
    a_file.write_text("{}")  # "does not exist"
    argv = [command, DIGITS, "--smoke", "--run", str(a_file), "--no-progress"]
    assert cli.main(argv) == 2
    err = _err_line(capsys)
    assert f"--run {a_file} is a file, not a run directory" in err
    assert a_file.read_text() == "{}"


def test_a_retrain_argument_that_is_a_file_is_said_to_be_one(tmp_path, capsys):
    a_file = tmp_path / "results.json"  # was: "no retrain checkpoint in FILE/retrain/..."
    a_file.write_text("{}")
    (tmp_path / "run" / "original").mkdir(parents=True)
    argv = ["evaluate", DIGITS, "--smoke", "--run", str(tmp_path / "run"), "--retrain"]
    assert cli.main([*argv, str(a_file), "--no-progress"]) == 2
    assert f"--retrain {a_file} is a file, not a run directory" in _err_line(capsys)


def test_a_config_file_value_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "CONFIG = {'data': {'name': 'digits10'}, 'model': {'name': 'digits_cnn'},\n"
        "          'train': {'epochs': 1}, 'retrain': {'epochs': 1},\n"
        "          'unlearn': {'margin': float('nan')}}\n"
    )
    assert cli.main(["train", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = _err_line(capsys)
    assert err.count(str(bad)) == 1 and "unlearn.margin must be a finite number" in err


def test_a_training_run_without_its_final_checkpoint_is_an_error(tmp_path, capsys, monkeypatch):
    # whatever loses the save (a keep of 0 did), "complete" needs the checkpoint on disk
    monkeypatch.setattr(Checkpoints, "save", lambda self, step, tree, info=None: None)
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    assert cli.main([*argv, "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "checkpoint of step 46 is missing" in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "complete" not in captured.out


def test_a_directory_made_by_a_failed_command_is_removed(tmp_path, capsys):
    out = tmp_path / "o"  # a valid setting that the data refuse: class 99 does not exist
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    argv += ["--set", "data.forget={'kind': 'class', 'classes': [99]}", "--no-progress"]
    assert cli.main(argv) == 2
    assert "99" in _err_line(capsys)
    assert not out.exists()


def test_method_values_and_repeated_seeds_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main([*COMPARE, "--out", str(out), "--set", "methods.ft.lr=abc"]) == 2
    assert "ft.lr" in _err_line(capsys)
    assert cli.main([*COMPARE, "--out", str(out), "--set", "methods.ft.epochs=1.5"]) == 2
    assert "ft.epochs" in _err_line(capsys)
    assert cli.main([*DEMO, "--out", str(out), "--seeds", "0", "0"]) == 2
    assert "distinct" in _err_line(capsys)
    assert not out.exists()


# -- one writer per directory


def _holder(directory: Path) -> subprocess.Popen:
    """A process that holds ``directory``'s lock until its stdin closes."""
    code = textwrap.dedent(
        """
        import sys
        from scissorhands_jax.experiment.rundir import run_directory
        with run_directory(sys.argv[1], command="holder"):
            print("locked", flush=True)
            sys.stdin.read()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline().strip()
    if line != "locked":
        proc.kill()
        pytest.fail(f"the lock holder did not start: {proc.stderr.read()}")
    return proc


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "X"
    holder = _holder(out)
    try:
        for argv in (
            [*COMPARE, "--methods", "ga", "--out", str(out)],
            ["train", DIGITS, "--smoke", "--out", str(out), "--no-progress"],
            [*DEMO, "--seeds", "0", "--out", str(out)],
        ):
            assert cli.main(argv) == 2
            err = _err_line(capsys)
            assert f"in use by pid {holder.pid}" in err and "`holder`" in err, err
        assert sorted(p.name for p in out.iterdir()) == [".scissorhands.lock"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not out.exists() or not any(out.iterdir())  # released: the lock file is gone


def test_the_lock_of_a_killed_holder_does_not_block_a_requeued_job(tmp_path, capsys):
    out = tmp_path / "X"
    holder = _holder(out)
    holder.send_signal(signal.SIGKILL)  # no clean-up at all: the file stays behind
    holder.wait(timeout=30)
    assert (out / ".scissorhands.lock").exists()
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    assert cli.main([*argv, "--no-progress"]) == 0
    assert "complete" in capsys.readouterr().out
    assert not (out / ".scissorhands.lock").exists()


@pytest.mark.slow
def test_two_comparisons_at_once_lose_no_rows(tmp_path, capsys):
    out = tmp_path / "X"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "scissorhands_jax.cli", *COMPARE, "--methods", "ft"]
    first = subprocess.Popen(
        [*argv, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        lock = out / ".scissorhands.lock"
        while first.poll() is None and not (lock.exists() and lock.stat().st_size):
            time.sleep(0.05)  # until the first holds the lock (its holder line written)
        assert first.poll() is None, "the first comparison ended before the second started"
        assert cli.main([*COMPARE, "--methods", "ga", "--out", str(out)]) == 2
        assert f"in use by pid {first.pid}" in _err_line(capsys)
    finally:
        _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr.decode()
    assert cli.main([*COMPARE, "--methods", "ga", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["retrain", "original", "ft", "ga"]


# -- results kept: demo seeds merge, resumed comparisons agree with their report


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
    monkeypatch.setattr(pipe, "fit_resumable", _boom(pipe.fit_resumable))
    monkeypatch.setattr(compare, "_scissorhands_fn", _boom(compare._scissorhands_fn))
    assert cli.main([*DEMO, "--seeds", "0", "1", "--out", str(d)]) == 0
    assert json.loads((d / "results.json").read_text()) == both
    # other settings are never mixed into the rows, unless --overwrite replaces them
    assert cli.main([*DEMO, "--seeds", "2", "--set", "unlearn.lr=0.01", "--out", str(d)]) == 2
    assert "other hyperparameters" in _err_line(capsys)
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


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "cmp"
    assert cli.main([*COMPARE, "--methods", "ft", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_a_resumed_comparison_with_another_mia_recomputes_the_gap(comparison, monkeypatch):
    before = json.loads((comparison / "results.json").read_text())
    assert {r["avg_gap_mia"] for r in before} == {"MIA_entropy"}
    monkeypatch.setattr(pipe, "fit_resumable", _boom(pipe.fit_resumable))
    for name in ("retrain", "ft"):
        monkeypatch.setitem(METHODS, name, _boom(METHODS[name]))
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
    err = _err_line(capsys)
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


# -- caches and checkpoints: damage is detected, never used, and said in one line


def test_truncated_checkpoint_data_is_one_line(tmp_path):
    import jax.numpy as jnp

    tree = {f"w{i}": jnp.full((64, 64), float(i)) for i in range(8)}
    with Checkpoints(tmp_path / "ck", identity={"run": 1}) as ck:
        ck.save(1, tree)
    files = [p for p in (tmp_path / "ck" / "1" / "state").rglob("*") if p.parent.name == "d"]
    assert files
    for path in files:  # every data file cut in half, as a copy that ran out of space
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code = textwrap.dedent(
        """
        import sys, time
        import jax.numpy as jnp
        from scissorhands_jax.checkpoint import CheckpointError, Checkpoints
        like = {f"w{i}": jnp.zeros((64, 64)) for i in range(8)}
        with Checkpoints(sys.argv[1], identity={"run": 1}) as ck:
            try:
                ck.restore(like)
            except CheckpointError as err:
                print(f"error: {err}", file=sys.stderr, flush=True)
        time.sleep(0.5)  # late callbacks of the aborted reads would be reported by now
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ck")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is corrupt and was not used" in lines[0], done.stderr


def test_a_resumed_run_counts_the_time_of_the_killed_part(tmp_path):
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original", "--no-progress"]
    assert cli.main([*argv, "--until-step", "10"]) == 0
    first = json.loads((out / "original" / "log.json").read_text())["segments"][0]["time_s"]
    with Checkpoints(out / "original" / "checkpoints", identity={}) as ck:
        at_10 = ck.meta(10)["info"]["elapsed_s"]
    assert 0 < at_10 <= first
    (out / "original" / "log.json").unlink()  # what kill -9 leaves: checkpoints, no log
    assert cli.main([*argv, "--resume"]) == 0
    log = json.loads((out / "original" / "log.json").read_text())
    (segment,) = log["segments"]
    assert log["complete"] and segment["to_step"] == 46
    assert log["train_time_s"] == pytest.approx(at_10 + segment["time_s"], abs=0.05)


# -- outputs: never overwritten without --overwrite, never half-written


def test_evaluate_keeps_an_existing_evaluation(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "original").mkdir(parents=True)
    (run / "evaluation.json").write_text('{"rows": ["earlier"]}')
    assert cli.main(["evaluate", DIGITS, "--smoke", "--run", str(run), "--no-progress"]) == 2
    assert "--overwrite" in _err_line(capsys)
    assert (run / "evaluation.json").read_text() == '{"rows": ["earlier"]}'


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1]")
    with pytest.raises(TypeError):
        write_json_atomic(path, [1, object()])  # fails halfway through the dump
    assert path.read_text() == "[1]" and sorted(os.listdir(tmp_path)) == ["results.json"]


def test_every_config_key_has_a_rule_and_every_default_passes_it():
    from scissorhands_jax.experiment import rules
    from scissorhands_jax.experiment.config import SCHEMAS
    from scissorhands_jax.settings import FLAT_NAMES

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
            assert name in known or (section == method and key in FLAT_NAMES), name
        rules.validate({**schema, "data": {**schema["data"], "name": "x"}}, kind)


@pytest.mark.parametrize(
    "command,name,content",
    [
        ("train", "forget_indices.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fo"),
        ("train", "original/log.json", b'{"role": "original", "segm'),
        ("diffusion-train", "run.json", b'{"data": "digits10", "forg'),
        ("diffusion-train", "original/log.json", b'{"role": "original", "segm'),
    ],
)
def test_a_damaged_run_file_is_one_line_naming_it(
    tmp_path, capsys, monkeypatch, command, name, content
):
    from scissorhands_jax import resumable
    from scissorhands_jax.experiment import pipeline

    monkeypatch.setattr(resumable, "fit_resumable", _boom(resumable.fit_resumable))
    monkeypatch.setattr(pipeline, "fit_resumable", _boom(resumable.fit_resumable))
    out = tmp_path / "run"
    (out / name).parent.mkdir(parents=True)
    (out / name).write_bytes(content)
    config = DIGITS if command == "train" else DDPM
    argv = [command, config, "--smoke", "--out", str(out), "--only", "original", "--resume"]
    argv += ["--until-step", "1", "--no-progress"]
    assert cli.main(argv) == 2
    err = _err_line(capsys)
    assert f"{out / name} is damaged" in err and "delete it" in err
