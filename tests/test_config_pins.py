"""Every experiment config resolves to the dict it resolved to before the configs were
rewritten as families.

``tests/pins/configs.json`` was written from the package and the config files as they
stood at commit 9a87e9c (extracted with ``git archive 9a87e9c`` into a separate folder):
per config, the dict :func:`scissorhands_jax.experiment.config.load_config` returned, without and
with ``SMOKE`` (``config_path`` left out), and the raw ``CONFIG`` of the demo's record
``digits10.py``. A config whose resolved dict changes on purpose needs a new pin and a
commit that says why. Settings added since, each with a default that keeps the old
behaviour (:data:`ADDED`), are checked to hold that default and then left out.
"""

from __future__ import annotations

import importlib.util
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


def _without_added(cfg: dict, kind: str) -> dict:
    for (section, key), default in (ADDED if kind == "classifier" else DIFFUSION_ADDED).items():
        assert cfg[section].pop(key) == default, (section, key)
    return cfg


@pytest.mark.parametrize("name", sorted(PINS))
def test_config_resolves_as_before(name):
    pinned = PINS[name]
    path = CONFIGS / f"{name}.py"
    assert path.is_file(), f"{path} is gone: every pinned config path must keep working"
    if name == "digits10":  # the demo's record: a plain CONFIG dict, not a pipeline config
        spec = importlib.util.spec_from_file_location("digits10", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert _as_json(module.CONFIG) == pinned["CONFIG"]
        return
    for smoke, section in ((False, "config"), (True, "smoke")):
        cfg = load_config(path, smoke=smoke, kind=pinned["kind"])
        assert cfg.pop("config_path") == name  # an installed config is recorded by name
        assert _as_json(_without_added(cfg, pinned["kind"])) == pinned[section], (name, section)


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
