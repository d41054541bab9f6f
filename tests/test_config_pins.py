"""Every experiment config resolves to the dict it resolved to before the configs were
rewritten as families.

``tests/pins/configs.json`` was written from the package and the config files as they
stood at commit 9a87e9c (extracted with ``git archive 9a87e9c`` into a separate folder):
per config, the dict :func:`scissorhands_jax.experiment.config.load_config` returned, without and
with ``SMOKE`` (``config_path`` left out). A config whose resolved dict changes on
purpose needs a new pin and a commit that says why. Settings added since, each with a
default that keeps the old behaviour (:data:`ADDED`), are checked to hold that default and
then left out; so is the ``methods`` section (:data:`METHODS`), added since.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from scissorhands_jax.experiment.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "scissorhands_jax" / "configs"
PINS = json.loads((Path(__file__).parent / "pins" / "configs.json").read_text())


ADDED = {
    ("train", "precision"): "float32",  # bfloat16 compute, opt-in
    ("retrain", "precision"): "float32",
    ("unlearn", "precision"): "float32",
    ("unlearn", "ties"): "exact",  # the trim's tie rule: exactly k entries
    ("unlearn", "project_epochs"): None,  # project in every repair epoch
    ("unlearn", "calibration"): "none",  # no output calibration after the repair
}
"""Settings added after the pins: ``(section, key) -> default``."""


def _as_json(value):
    return json.loads(json.dumps(value))


DIFFUSION_ADDED = {("train", "precision"): "float32", ("retrain", "precision"): "float32"}
"""The same for the diffusion schema."""
TEXT_ADDED = {
    "templates": None,
    "paraphrases": None,
    "heldout": None,
    "names": None,
    "context_length": 8,
    "encoder": None,
    "unet": None,
}
"""The diffusion schema's ``text`` section, added since: left out where it holds these
defaults (a class-conditional generator); pinned where a config sets it."""


_DIGITS_METHODS = {
    "ft": {"lr": 0.1, "epochs": 10, "batch_size": 64},
    "ga": {"lr": 0.03, "epochs": 5, "batch_size": 64},
    "rl": {"lr": 0.003, "epochs": 10, "batch_size": 64},
    "l1_sparse": {"alpha": 0.03, "lr": 0.01, "epochs": 10, "batch_size": 64},
    "salun": {"ratio": 0.5, "lr": 5e-3, "epochs": 10, "batch_size": 64},
    "iu": {"alpha": 100.0, "damping": 1.0, "fisher_examples": 256, "batch_size": 64},
    "be": {"lr": 1e-4, "epochs": 10, "batch_size": 64},
    "bs": {"bound": 0.1, "lr": 1e-4, "epochs": 10, "batch_size": 64},
    "scrub": {"lr": 5e-3, "epochs": 3, "max_epochs": 2, "batch_size": 64, "forget_batch_size": 32},
}
METHODS = {"digits10_random10": _DIGITS_METHODS, "digits10_class0": _DIGITS_METHODS}
"""The ``methods`` section of each config that has one (the digits comparison's tuned
hyperparameters, as the digits-10 comparison ran them); every other config's is empty."""


def _without_added(cfg: dict, kind: str, name: str) -> dict:
    for (section, key), default in (ADDED if kind == "classifier" else DIFFUSION_ADDED).items():
        assert cfg[section].pop(key) == default, (section, key)
    if kind == "classifier":
        assert cfg.pop("methods") == METHODS.get(name, {}), name
    elif cfg["text"] == TEXT_ADDED:
        cfg.pop("text")
    return cfg


@pytest.mark.parametrize("name", sorted(PINS))
def test_config_resolves_as_before(name):
    pinned = PINS[name]
    path = CONFIGS / f"{name}.py"
    assert path.is_file(), f"{path} is gone: every pinned config path must keep working"
    for smoke, section in ((False, "config"), (True, "smoke")):
        cfg = load_config(path, smoke=smoke, kind=pinned["kind"])
        assert cfg.pop("config_path") == name  # an installed config is recorded by name
        resolved = _as_json(_without_added(cfg, pinned["kind"], name))
        assert resolved == pinned[section], (name, section)


def test_every_config_is_pinned():
    # the audit protocols are pinned by hand in tests/test_audit_protocols.py
    configs = {p.stem for p in CONFIGS.glob("*.py") if not p.name.startswith(("_", "audit_"))}
    assert configs == set(PINS)


def test_a_config_imports_its_family_base_from_its_own_folder(tmp_path):
    for folder, lr in (("a", 0.5), ("b", 0.25)):  # two families, one module name
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "_family.py").write_text(
            f"def cell(name):\n    return {{'data': {{'name': name}}, 'unlearn': {{'lr': {lr}}}}}\n"
        )
        (tmp_path / folder / "one.py").write_text(
            "from _family import cell\n\nCONFIG = cell('cifar10')\n"
        )
    path_before = list(sys.path)
    assert load_config(tmp_path / "a" / "one.py")["unlearn"]["lr"] == 0.5
    assert load_config(tmp_path / "b" / "one.py")["unlearn"]["lr"] == 0.25
    assert sys.path == path_before and "_family" not in sys.modules
    (tmp_path / "a" / "two.py").write_text("from _missing import cell\n")
    with pytest.raises(ValueError, match="two.py failed to load: ModuleNotFoundError"):
        load_config(tmp_path / "a" / "two.py")
    assert sys.path == path_before
