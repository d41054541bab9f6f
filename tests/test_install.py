"""The package works where its users have it: installed (not a clone), with the experiment
configs inside it, each addressable by name from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scissorhands_jax.experiment.config import (
    CONFIG_DIR,
    config_kind,
    config_names,
    find_config,
    load_config,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER_CELLS = {
    f"{data}_{request}"
    for data, requests in (
        ("cifar10", ("random10", "random20", "random50")),
        ("cifar100", ("random10", "random20", "random50")),
        ("svhn", ("random10", "random20", "class0")),
    )
    for request in requests
}


def test_the_configs_are_package_files():
    assert CONFIG_DIR == ROOT / "scissorhands_jax" / "configs"
    names = set(config_names())
    assert PAPER_CELLS | {"celebahq_ids30", "digits10_random10", "digits_ddpm_class0"} <= names
    assert not any(n.startswith("_") for n in names)  # a family's base is not a config
    assert not (ROOT / "experiments" / "configs").exists()  # one copy


def test_every_name_resolves_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the clone: no relative path could work
    for name in config_names():
        if name.startswith("audit_"):  # the audit protocols (read by audit/tune, tested there)
            continue
        path = find_config(name)
        assert path == CONFIG_DIR / f"{name}.py" and path.is_file()
        assert find_config(f"{name}.py") == path
        source = path.read_text()
        kind = "diffusion" if '"diffusion"' in source else "classifier"
        kind = "sd" if '"recipe"' in source else kind  # a Stable Diffusion recipe
        cfg = load_config(name, smoke=True, kind=kind)
        assert config_kind(cfg) == kind and cfg["smoke"] is True
        assert cfg["config_path"] == name  # by name, wherever the package is installed
        assert load_config(path, kind=kind)["config_path"] == name  # its file: the same


def test_a_file_wins_over_a_name_and_an_unknown_name_lists_the_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "digits10_random10.py"
    own.write_text('CONFIG = {"data": {"name": "digits10"}, "model": {"name": "digits_cnn"}}\n')
    assert find_config("digits10_random10.py") == Path("digits10_random10.py")
    assert load_config("digits10_random10.py")["config_path"] == "digits10_random10.py"
    assert find_config("digits10_random10") == CONFIG_DIR / "digits10_random10.py"
    with pytest.raises(ValueError, match=r"'cifar11'.*cifar10_random10, cifar10_random20"):
        find_config("cifar11")
    with pytest.raises(ValueError, match="neither a file nor an installed config"):
        find_config("somewhere/cifar10_random10.py")  # a path is a path, never a name
    with pytest.raises(ValueError, match="_paper_resnet"):
        find_config("_paper_resnet")  # a family's base is not a config


def _run_installed(site: Path, cwd: Path, *args: str, timeout: int = 600):
    env = {**os.environ, "PYTHONPATH": str(site), "SCISSORHANDS_CACHE": "off"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow  # a wheel build and a smoke training run, ~30 s
def test_an_installed_package_trains_a_config_by_name(installed_package, tmp_path):
    where = _run_installed(
        installed_package, tmp_path, "-c",
        "import scissorhands_jax.experiment.config as c; "
        "print(c.__file__); print(c.config_names())",
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(installed_package))  # not the clone's copy
    assert "cifar10_random10" in where.stdout and "_paper_resnet" not in where.stdout
    done = _run_installed(
        installed_package, tmp_path, "-m", "scissorhands_jax.cli",
        "train", "digits10_random10", "--smoke", "--out", "o", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "o" / "original").is_dir() and (tmp_path / "o" / "retrain").is_dir()
    assert "epoch 1" not in done.stdout  # --no-progress: no per-epoch lines
    # a tfds config by name: its data are missing here, so it must stop at the data
    # (the name resolved, the config loaded and validated), not at the config
    cifar = _run_installed(
        installed_package, tmp_path, "-m", "scissorhands_jax.cli",
        "train", "cifar10_random10", "--smoke", "--out", "c", "--data-dir", str(tmp_path / "d"),
    )  # fmt: skip
    assert cifar.returncode == 2 and "cifar10 is not prepared" in cifar.stderr, cifar.stderr
