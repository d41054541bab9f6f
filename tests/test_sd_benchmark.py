"""The SD UNet step benchmark script runs in its tiny mode and writes its result file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "sd_unet_step.py"


@pytest.mark.slow
def test_tiny_run_writes_the_result_file(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((tmp_path / "sd_unet_step_tiny.json").read_text())
    assert record["tiny"] and record["batch"] == 2 and record["tokens"] == 77
    jax_part = record["jax"]
    assert jax_part["framework"] == "jax" and jax_part["precision"] == "bfloat16"
    assert jax_part["loss_finite"] and len(jax_part["step_s_all"]) == record["steps"]
    assert "skipped" in record["torch"] or record["torch"]["framework"] == "torch"
