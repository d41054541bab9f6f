"""Run directories (scissorhands_jax.experiment.rundir): one reader of state files that
names a damaged file and what to do, one "made with other settings?" check, a ``--run``
argument that is a file, missing or empty said as such, atomic writes, a directory of a
failed command removed, and one writer per directory (a lock that names its holder and
outlives no killed process)."""

from __future__ import annotations

import errno
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
from conftest import COMPARE, DDPM, DEMO, DIGITS, REPO, boom, err_line

from scissorhands_jax import cli
from scissorhands_jax.experiment import rundir
from scissorhands_jax.experiment.rundir import (
    check_setting,
    existing_run,
    read_state,
    write_json_atomic,
)


def test_read_state_of_a_missing_file_is_the_default(tmp_path):
    assert read_state(tmp_path / "absent.json", {"x": 1}) == {"x": 1}
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_state(tmp_path / "ok.json", kind=dict) == {"a": [1, 2]}


@pytest.mark.parametrize(
    "content,why",
    [
        ('{"original": {"sha256": "ab', "not JSON"),  # truncated mid-string
        ("", "not JSON"),  # empty: a write that never happened
        (b"\xff\xfe\x00", "not text"),
        ("[1, 2]", "it holds list, not an object"),
    ],
)
def test_a_damaged_state_file_is_named_with_what_is_wrong_and_what_to_do(tmp_path, content, why):
    path = tmp_path / "index.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as info:
        read_state(path, kind=dict, fix="delete it, or choose another --out")
    message = str(info.value)
    assert str(path) in message and why in message
    assert message.endswith("delete it, or choose another --out.")
    assert "\n" not in message


def test_check_setting_records_then_resumes_then_names_what_differs(tmp_path):
    path = tmp_path / "setting.json"
    wanted = {"seed": 0, "protocols": {"tiny": {"epochs": 2, "lr": 0.05}}, "shape": (8, 8)}
    check_setting(path, wanted, what="an audit", fix="pass a new --out")
    # written as JSON gives it back: a tuple is a list, and the same setting passes again
    assert json.loads(path.read_text())["shape"] == [8, 8]
    check_setting(path, {**wanted, "seed": np.int64(0)}, what="an audit", fix="pass a new --out")
    other = {"seed": 1, "protocols": {"tiny": {"epochs": 3, "lr": 0.05}}, "shape": (8, 8)}
    with pytest.raises(ValueError) as info:
        check_setting(path, other, what="an audit", fix="pass a new --out")
    assert str(info.value) == (
        f"{tmp_path} holds an audit made with other settings (protocols.tiny.epochs, seed); "
        "pass a new --out."
    )
    assert json.loads(path.read_text())["seed"] == 0  # a refused setting is never written


def test_check_setting_says_when_the_directory_belongs_to_another_command(tmp_path):
    path = tmp_path / "setting.json"
    path.write_text(json.dumps({"data": {}, "model": {}, "config": "c.py"}))  # a comparison's
    with pytest.raises(ValueError, match="does not record an audit .* another command"):
        check_setting(path, {"seed": 0, "shadows": 4}, what="an audit", fix="new --out")
    # ``keys``: only those are compared (others may change), and all must be recorded
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"data": "digits10", "config": "a.py"}))
    check_setting(
        run, {"data": "digits10", "config": "b.py"}, what="a run", fix="x", keys=("data",)
    )
    assert json.loads(run.read_text())["config"] == "b.py"
    with pytest.raises(ValueError, match="does not record a run"):
        check_setting(run, {"data": "d", "shape": 1}, what="a run", fix="x", keys=("shape",))


def test_check_setting_of_a_damaged_record_is_one_line(tmp_path):
    path = tmp_path / "setting.json"
    path.write_text('{"seed": ')
    with pytest.raises(ValueError, match=r"setting.json is damaged \(not JSON"):
        check_setting(path, {"seed": 0}, what="an audit", fix="new --out")


def test_existing_run_says_file_missing_or_untrained(tmp_path):
    maker = "scissorhands train C.py"
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ValueError) as info:
        existing_run(a_file, maker=maker)
    assert "is a file, not a run directory" in str(info.value)
    assert "train C.py --out" in str(info.value) and f"--out {a_file}" not in str(info.value)
    with pytest.raises(ValueError, match="does not exist; train one first"):
        existing_run(tmp_path / "absent", maker=maker)
    with pytest.raises(ValueError, match=f"holds no original model; train one first with: {maker}"):
        existing_run(tmp_path, maker=maker)
    assert existing_run(tmp_path, maker=maker, holds=None) == tmp_path


def test_a_full_disk_names_the_file_it_could_not_write_and_leaves_no_debris(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # fsync names no file

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(OSError) as info:
        rundir.write_json_atomic(tmp_path / "results.json", [1, 2])
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "results.json")
    assert list(tmp_path.iterdir()) == []


def test_prepare_out_dir_creates_the_folder_and_refuses_a_file(tmp_path):
    made = rundir.prepare_out_dir(tmp_path / "a" / "b")
    assert made == tmp_path / "a" / "b" and made.is_dir() and not any(made.iterdir())
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*f exists and is not a directory"):
        rundir.prepare_out_dir(tmp_path / "f")


# -------------------- through the commands: --run and --retrain arguments, damaged files


@pytest.mark.parametrize("command", ["unlearn", "evaluate"])
def test_a_run_argument_that_is_a_file_is_said_to_be_one(tmp_path, capsys, command):
    a_file = tmp_path / "results.json"  # was: "train one first" (which fails on a file) /
    a_file.write_text("{}")  # "does not exist"
    argv = [command, DIGITS, "--smoke", "--run", str(a_file), "--no-progress"]
    assert cli.main(argv) == 2
    err = err_line(capsys)
    assert f"--run {a_file} is a file, not a run directory" in err
    assert a_file.read_text() == "{}"


def test_a_retrain_argument_that_is_a_file_is_said_to_be_one(tmp_path, capsys):
    a_file = tmp_path / "results.json"  # was: "no retrain checkpoint in FILE/retrain/..."
    a_file.write_text("{}")
    (tmp_path / "run" / "original").mkdir(parents=True)
    argv = ["evaluate", DIGITS, "--smoke", "--run", str(tmp_path / "run"), "--retrain"]
    assert cli.main([*argv, str(a_file), "--no-progress"]) == 2
    assert f"--retrain {a_file} is a file, not a run directory" in err_line(capsys)


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
    from scissorhands_jax import _resumable as resumable
    from scissorhands_jax.experiment import pipeline

    monkeypatch.setattr(resumable, "fit_resumable", boom(resumable.fit_resumable))
    monkeypatch.setattr(pipeline, "fit_resumable", boom(resumable.fit_resumable))
    out = tmp_path / "run"
    (out / name).parent.mkdir(parents=True)
    (out / name).write_bytes(content)
    config = DIGITS if command == "train" else DDPM
    argv = [command, config, "--smoke", "--out", str(out), "--only", "original", "--resume"]
    argv += ["--until-step", "1", "--no-progress"]
    assert cli.main(argv) == 2
    err = err_line(capsys)
    assert f"{out / name} is damaged" in err and "delete it" in err


# --------------------------------------------- nothing half-written, nothing left behind


def test_a_directory_made_by_a_failed_command_is_removed(tmp_path, capsys):
    out = tmp_path / "o"  # a valid setting that the data refuse: class 99 does not exist
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    argv += ["--set", "data.forget={'kind': 'class', 'classes': [99]}", "--no-progress"]
    assert cli.main(argv) == 2
    assert "99" in err_line(capsys)
    assert not out.exists()


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1]")
    with pytest.raises(TypeError):
        write_json_atomic(path, [1, object()])  # fails halfway through the dump
    assert path.read_text() == "[1]" and sorted(os.listdir(tmp_path)) == ["results.json"]


# -------------------------------------------------------------- one writer per directory


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
            err = err_line(capsys)
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
        assert f"in use by pid {first.pid}" in err_line(capsys)
    finally:
        _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr.decode()
    assert cli.main([*COMPARE, "--methods", "ga", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["retrain", "original", "ft", "ga"]
