"""How every command ends (scissorhands_jax.cli): one line and a status that says what
happened: 2 an error (a full disk included, however deep in a cause chain), 75 SIGTERM
(saved; rerun to resume), 130 Ctrl-C; and bad flags refused by argparse, naming them."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import err_line

from scissorhands_jax import cli
from scissorhands_jax._checkpoint import Checkpoints
from scissorhands_jax.baselines import METHODS
from scissorhands_jax.commands import evaluate
from scissorhands_jax.experiment import audit, compare

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "sklearn", "orbax", "tqdm")
"""Libraries that take seconds to import on a loaded machine: ``--help`` loads none."""
DIGITS = str(REPO / "scissorhands_jax" / "configs" / "digits10_random10.py")


def _evaluate_that(monkeypatch, tmp_path, body) -> int:
    """``scissorhands evaluate`` whose work is ``body()``."""

    def run(args):
        body()
        return 0

    monkeypatch.setattr(evaluate, "run", run)
    return cli.main(["evaluate", DIGITS, "--run", str(tmp_path), "--no-progress"])


def test_sigterm_outside_a_training_loop_exits_75_in_one_line(tmp_path, monkeypatch, capsys):
    before = signal.getsignal(signal.SIGTERM)

    def work():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the command")

    assert _evaluate_that(monkeypatch, tmp_path, work) == 75
    assert "stopped by SIGTERM" in err_line(capsys)
    assert signal.getsignal(signal.SIGTERM) is before  # main() leaves the process as it was


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def work():
        raise KeyboardInterrupt

    assert _evaluate_that(monkeypatch, tmp_path, work) == 130
    assert "interrupted" in err_line(capsys)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys, depth):
    def work():
        err: BaseException = OSError(errno.ENOSPC, "No space left on device", "/data/run/x.npz")
        for _ in range(depth):  # as an asynchronous writer (orbax) wraps it
            try:
                raise err
            except BaseException as inner:
                err = RuntimeError("save failed")
                err.__cause__ = inner
        raise err

    assert _evaluate_that(monkeypatch, tmp_path, work) == 2
    err = err_line(capsys)
    assert "no space left on device writing /data/run/x.npz" in err


class _ClosedLoopCallback:
    """Raises in ``__del__``: Python reports it through ``sys.unraisablehook``, as it does
    TensorStore's callbacks into the closed event loop of a failed orbax save."""

    def __del__(self):
        raise RuntimeError("Event loop is closed")


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_save_is_one_line(tmp_path, monkeypatch, capsys):
    file = "/data/run/original/checkpoints/46.orbax-checkpoint-tmp/d/9f2c"
    full = ValueError(  # what orbax's TensorStore writes raise: no OSError in the chain
        'RESOURCE_EXHAUSTED: Error writing "params.Conv_0.kernel/0.0" in OCDBT database at '
        f'local file "/data/run/original/checkpoints/46/": Failed writing: "{file}": Failed '
        "to write 3823888 bytes to file 5: No space left on device [os_error_code='28']"
    )

    def save(self, step, tree, info=None):
        try:  # orbax's background threads log it with a traceback, then it is raised
            raise full
        except ValueError:
            logging.getLogger("absl").exception("Save Finalize thread failed.")
        _ClosedLoopCallback()  # dropped at once: an unraisable "Event loop is closed"
        raise full

    handler = logging.StreamHandler()  # as absl's own handler writes to stderr
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # prints to stderr
    logging.getLogger("absl").addHandler(handler)
    monkeypatch.setattr(Checkpoints, "save", save)
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    try:
        assert cli.main([*argv, "--no-progress"]) == 2
    finally:
        logging.getLogger("absl").removeHandler(handler)
    assert f"no space left on device writing {file}; free some space" in err_line(capsys)


def test_a_full_disk_while_saving_the_request_names_the_file(tmp_path, monkeypatch, capsys):
    from scissorhands_jax.data import splits

    replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith("forget_indices.npy"):
            raise OSError(errno.ENOSPC, "No space left on device")  # no file name: a write
        return replace(src, dst)

    monkeypatch.setattr(splits.os, "replace", full_disk)
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    assert cli.main([*argv, "--no-progress"]) == 2
    err = err_line(capsys)
    assert f"no space left on device writing {out / 'forget_indices.npy'}" in err
    assert not list(out.glob(".*.tmp"))  # no debris


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def work():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _evaluate_that(monkeypatch, tmp_path, work)


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["audit", "--quick", "--seed", "-1"], "--seed"),  # wrote setting.json, then refused
        (["audit", "--quick", "--seed", "4294967296"], "--seed"),
        (["audit", "--quick", "--shadows", "0"], "--shadows"),  # 0 read as "not given": 16
        (["compare", "--seeds", "0", "-1"], "--seeds"),
        (["demo", "--train-epochs", "0"], "--train-epochs"),  # a config value now: --set
        (["demo", "--lr", "nan"], "--lr"),
        (["demo", "--seeds", "-1"], "--seeds"),
    ],
)
def test_bad_flags_are_refused_naming_them_before_anything_is_written(tmp_path, capsys, argv, flag):
    out = tmp_path / "A"
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--out", str(out), "--no-plot"])
    assert info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not out.exists()


def test_the_library_refuses_the_same_values_before_anything_is_written(tmp_path):
    out = tmp_path / "A"
    with pytest.raises(ValueError, match=r"--seed must be an integer in \[0, 2\*\*31\)"):
        audit.run_audit(out=out, quick=True, seed=-1, plot=False)
    with pytest.raises(ValueError, match="--shadows must be an even number of at least 4; got 0"):
        audit.run_audit(out=out, quick=True, shadows=0, plot=False)
    with pytest.raises(ValueError, match="--seeds must be distinct integers"):
        compare.run_compare(out, setting=compare.DIGITS, seeds=[-1], methods=["ft"], plot=False)
    for epochs in (0, -3):
        with pytest.raises(ValueError, match="train.epochs must be an integer >= 1"):
            overrides = [f"train.epochs={epochs}"]
            compare.run_compare(out, setting="digits10_class0", config_overrides=overrides)
    assert not out.exists()


@pytest.mark.slow
def test_a_comparison_stopped_by_sigterm_keeps_its_rows_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--out", str(out), "--seeds", "0", "--setting", "digits10_class0"]
    argv += ["--methods", "ft", "ga", "--smoke", "--set", "methods.ft.epochs=1"]
    argv += ["--set", "methods.ga.epochs=1", "--no-plot", "--no-progress"]
    ga = METHODS["ga"]

    def terminated_ga(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise AssertionError("SIGTERM did not stop the comparison")

    monkeypatch.setitem(METHODS, "ga", terminated_ga)
    assert cli.main(argv) == 75
    assert "stopped by SIGTERM" in err_line(capsys)
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["retrain", "original", "ft"]  # no "error" row for ga
    assert all("error" not in r for r in rows)

    def boom(*args, **kwargs):
        raise AssertionError("finished work was redone")

    monkeypatch.setitem(METHODS, "ga", ga)
    monkeypatch.setitem(METHODS, "ft", boom)
    monkeypatch.setitem(METHODS, "retrain", boom)
    assert cli.main(argv) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["retrain", "original", "ft", "ga"]


def test_help_of_the_command_line_and_of_every_command_loads_no_numerical_library():
    code = (
        "import contextlib, io, sys\n"
        "from scissorhands_jax import cli\n"
        "cli.build_parser()\n"
        "for argv in [['--help'], *[[name, '--help'] for name in cli.COMMANDS]]:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        cli.main(argv)\n"
        f"print(sorted({{m.partition('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("argv", [["--help"], ["unlearn", "--help"]])
def test_python_m_help_imports_no_jax(argv):
    run = [sys.executable, "-X", "importtime", "-m", "scissorhands_jax", *argv]
    out = subprocess.run(run, capture_output=True, text=True, check=True)
    assert "usage: scissorhands" in out.stdout
    if argv != ["--help"]:  # the installed configs, listed without loading the loader
        assert "digits10_random10" in out.stdout.replace("\n", " ")
    modules = [line.rpartition("|")[2].strip() for line in out.stderr.splitlines()]
    assert "scissorhands_jax.cli" in modules  # the timing lines were read
    assert not [m for m in modules if m.partition(".")[0] in HEAVY]


def test_a_command_takes_an_installed_config_by_its_name(tmp_path, capsys):
    from scissorhands_jax.experiment.config import config_names, find_config

    shipped = sorted(p.stem for p in (REPO / "scissorhands_jax" / "configs").glob("[!_]*.py"))
    assert "digits10_random10" in shipped and config_names() == shipped
    assert find_config("digits10_random10") == Path(DIGITS)
    missing = tmp_path / "no_run"
    assert cli.main(["evaluate", "digits10_random10", "--run", str(missing)]) == 2
    err = err_line(capsys)
    assert str(missing) in err and "installed config" not in err
