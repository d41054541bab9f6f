"""The command line, not the library, turns on JAX's persistent compilation cache."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
import jax
import scissorhands_jax, scissorhands_jax.cli
print("after-import", jax.config.jax_compilation_cache_dir)
# a command past its flags (--help exits before the cache is set); it fails at once
scissorhands_jax.cli.main(["evaluate", "no_such_config", "--run", "no_such_run"])
print("after-main", jax.config.jax_compilation_cache_dir)
"""


def _probe(env_extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAX_COMPILATION", "SCISSORHANDS_CACHE"))
    }
    env.update(env_extra, JAX_PLATFORMS="cpu", PYTHONPATH=os.getcwd())
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("after-"))


def test_main_sets_the_cache_and_import_does_not(tmp_path):
    seen = _probe({"SCISSORHANDS_CACHE": str(tmp_path / "xla")})
    assert seen["after-import"] == "None"
    assert seen["after-main"] == str(tmp_path / "xla")


def test_cache_directory_choice(monkeypatch, tmp_path):
    from scissorhands_jax.experiment.runtime import compilation_cache_dir

    monkeypatch.delenv("SCISSORHANDS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache_dir() == str(tmp_path / "scissorhands_jax" / "xla")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation_cache_dir() == str(tmp_path / "home" / ".cache" / "scissorhands_jax" / "xla")
    for off in ("", "off", "OFF", "0"):
        monkeypatch.setenv("SCISSORHANDS_CACHE", off)
        assert compilation_cache_dir() is None
    monkeypatch.setenv("SCISSORHANDS_CACHE", str(tmp_path / "mine"))
    assert compilation_cache_dir() == str(tmp_path / "mine")
