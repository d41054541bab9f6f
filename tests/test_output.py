"""Output for people: the library is quiet by default, the command line writes one line
per epoch (no progress-bar debris in a log file), and the loops hand their log entries
to a callback."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import scissorhands_jax as shs
from scissorhands_jax import cli
from scissorhands_jax._loop import report
from scissorhands_jax.experiment import runtime

CONFIG = str(Path(__file__).resolve().parents[1] / "scissorhands_jax/configs/digits10_random10.py")


def _loss(params, state, batch, train):
    return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2), state


def _problem():
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(24, 3)).astype(np.float32),
            "y": rng.normal(size=(24, 2)).astype(np.float32)}  # fmt: skip
    return {"w": jnp.zeros((3, 2))}, shs.data.array_source(data, 8)


def test_library_defaults_print_nothing(capsys):
    params, source = _problem()
    shs.fit(_loss, params, {}, source, key=jax.random.key(0), epochs=2, tx=shs.sgd(0.1))
    eligible = {"w": True}
    shs.repair(_loss, params, {}, retain=source, forget=source, key=jax.random.key(1),
               eligible=eligible, settings=shs.RepairSettings(epochs=1))  # fmt: skip
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert shs.TrainingSettings().progress is False


def test_fit_callback_gets_every_epoch():
    params, source = _problem()
    seen = []
    _, _, log = shs.fit(_loss, params, {}, source, key=jax.random.key(0), epochs=3,
                        tx=shs.sgd(0.1), callback=lambda *a: seen.append(a))  # fmt: skip
    assert [e for e, _ in seen] == [0, 1, 2] and [x for _, x in seen] == log


def test_report_writes_one_readable_line(caplog):
    entry = {"epoch": 2, "step": 30, "loss_retain": 0.25, "loss_forget": None, "time_s": 1.5}
    with caplog.at_level(logging.INFO, logger="scissorhands_jax"):
        report("repair", entry)
    assert caplog.messages == ["repair: epoch 3, step 30  loss_retain 0.2500  (1.5 s)"]


def test_the_command_line_writes_epoch_lines_and_no_bars_into_a_log(tmp_path, capsys):
    # under pytest stdout and stderr are not terminals: as in a log file or a pipe
    package = logging.getLogger("scissorhands_jax")
    before = (list(package.handlers), package.level, package.propagate)
    assert cli.main(["train", CONFIG, "--smoke", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert "original: epoch 1, step 23  loss" in "\n".join(lines)
    assert "original: epoch 2, step 46  loss" in "\n".join(lines)
    assert "\r" not in out.out + out.err  # no progress bar redrawn into the log
    # a library user's logging is left as it was
    assert (list(package.handlers), package.level, package.propagate) == before


def test_only_process_zero_speaks(monkeypatch):
    record = logging.LogRecord("scissorhands_jax._loop", logging.INFO, "", 0, "x", (), None)
    keep = runtime.MainProcessOnly()
    assert keep.filter(record)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not keep.filter(record)
    warning = logging.LogRecord("scissorhands_jax._loop", logging.WARNING, "", 0, "x", (), None)
    assert keep.filter(warning)  # warnings and errors from every process


def test_no_progress_silences_the_epoch_lines_but_not_warnings(capsys):
    package = logging.getLogger("scissorhands_jax")
    before = (list(package.handlers), package.level, package.propagate)
    for flag, expect_lines in ((True, False), (False, True)):
        handler = runtime.configure_output(argparse.Namespace(no_progress=flag))
        try:
            report("original", {"epoch": 0, "step": 23, "loss": 0.5, "time_s": 1.0})
            logging.getLogger("scissorhands_jax._loop").warning("a warning")
        finally:
            package.removeHandler(handler)
            package.setLevel(before[1])
            package.propagate = before[2]
        out = capsys.readouterr().out
        assert ("original: epoch 1" in out) == expect_lines, (flag, out)
        assert "a warning" in out
    assert list(package.handlers) == before[0]
