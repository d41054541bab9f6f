"""The digits-10 config records the values the demo actually uses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from scissorhands_jax.experiment.demo import TRAIN_DEFAULTS, UNLEARN_DEFAULTS

CONFIG = Path(__file__).resolve().parents[1] / "scissorhands_jax" / "configs" / "digits10.py"


def test_digits10_config_matches_the_demo_defaults():
    spec = importlib.util.spec_from_file_location("digits10", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.CONFIG
    assert "scissorhands demo --out" in module.__doc__
    assert cfg["unlearn"] == UNLEARN_DEFAULTS
    for key, value in TRAIN_DEFAULTS.items():
        assert cfg["train"][key] == value
