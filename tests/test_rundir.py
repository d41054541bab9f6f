"""Run directories' state files (scissorhands_jax.experiment.rundir): one reader that names a
damaged file and what to do, one "made with other settings?" check, and a ``--run``
argument that is a file, missing or empty said as such."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from scissorhands_jax.experiment import rundir
from scissorhands_jax.experiment.rundir import check_setting, existing_run, read_state


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
