"""The audit's protocols (scissorhands_jax.experiment.protocol): config files that load to
the settings the audit has always used, checked on load, and models and populations of
the right shapes (fast; the audit of each protocol itself is a measurement, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax.experiment import audit, protocol
from scissorhands_jax.experiment.config import CONFIG_DIR, load_config
from scissorhands_jax.experiment.rundir import check_setting

# What the audit ran before its protocols were config files, written out by hand: the
# population and schedule of each protocol (as its setting.json records them) ...
SETTINGS = {
    "digits10": {
        "name": "digits10",
        "pool_size": 1437,
        "candidates": 286,
        "model": "digits_cnn",
        "epochs": 30,
        "lr": 0.05,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "why": "the comparison's protocol: the digits CNN on halves of the 1,437 training "
        "digits; its models generalise so well that membership is barely measurable",
    },
    "digits_small": {
        "name": "digits_small",
        "pool_size": 400,
        "candidates": 80,
        "model": "digits_mlp",
        "epochs": 80,
        "lr": 0.05,
        "weight_decay": 0.0,
        "batch_size": 64,
        "why": "membership made measurable: a wide MLP (two hidden layers of 512) without "
        "weight decay on halves of 400 digits memorises its 200 training examples; each "
        "model forgets 40 of them (20 %)",
    },
    "digits_cnn_small": {
        "name": "digits_cnn_small",
        "pool_size": 200,
        "candidates": 40,
        "model": "digits_cnn",
        "epochs": 120,
        "lr": 0.05,
        "weight_decay": 0.0,
        "batch_size": 32,
        "why": "membership measurable on a convolutional model: the digits CNN without weight "
        "decay on halves of 200 digits memorises its 100 training examples; each model "
        "forgets 20 of them (20 %), and Scissorhands re-initialises all but the first conv",
    },
}
# ... and the hyperparameters each method ran with (the digits comparison's; Scissorhands'
# eligible set all but the first layer of the protocol's model).
SCISSORHANDS = {
    "lr": 1.5e-3,
    "epochs": 10,
    "sparsity": 0.97,
    "lam": 0.05,
    "memory_num": 1,
    "prune_num": 1,
    "batch_size": 64,
    "margin": 0.5,
    "eps": 1e-3,
    "projection": "gem",
    "project_every": 1,
    "reinit": "model",
}
METHODS = {
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
ELIGIBLE = {"digits_cnn": "all_but_first_conv", "digits_mlp": "^(?!hidden1/)"}


def _write(path, settings, methods=None):
    config = (
        {"protocol": settings} if methods is None else {"protocol": settings, "methods": methods}
    )
    path.write_text(f"CONFIG = {config!r}\n")
    return path


def _settings(name="digits_small", **changes):
    settings = {k: v for k, v in SETTINGS[name].items() if k != "name"}
    return {**settings, **changes}


def test_the_installed_protocols_are_the_three_config_files():
    assert protocol.protocol_names() == ["digits10", "digits_cnn_small", "digits_small"]
    assert protocol.DEFAULT_PROTOCOL == "digits_small"
    for name in protocol.protocol_names():
        assert (CONFIG_DIR / f"audit_{name}.py").is_file()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_protocol_loads_the_settings_the_audit_always_used(name):
    loaded = protocol.load_protocol(name)
    assert loaded.setting() == SETTINGS[name]
    # setting.json of an earlier audit: the same JSON, so that directory resumes
    assert json.dumps(loaded.setting()) == json.dumps(SETTINGS[name])
    assert protocol.load_protocol(CONFIG_DIR / f"audit_{name}.py") == loaded  # by path
    assert protocol.load_protocol(f"audit_{name}") == loaded
    assert protocol.load_protocol(loaded) is loaded


RECORDS = sorted(
    (Path(__file__).resolve().parents[1] / "experiments" / "results").rglob("setting.json")
)


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.parent.name)
def test_the_directories_of_earlier_audits_and_tunes_still_resume(record, tmp_path):
    stored = json.loads(record.read_text())
    if "protocols" not in stored:
        pytest.skip("not an audit or a tune")
    wanted = {
        **stored,
        "protocols": {n: protocol.load_protocol(n).setting() for n in stored["protocols"]},
    }
    copy = tmp_path / "setting.json"
    copy.write_text(record.read_text())
    # the check a resumed run makes: any difference would be refused, naming the key
    check_setting(copy, wanted, what="a run", fix="-", optional=("tuned",), write=False)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_method_keeps_the_hyperparameters_it_ran_with(name):
    loaded = protocol.load_protocol(name)
    scissorhands = {"eligible": ELIGIBLE[loaded.model], **SCISSORHANDS}
    expected = {**METHODS, "scissorhands": scissorhands}
    for method, hps in expected.items():
        assert protocol.method_hyperparameters(method, loaded) == hps, method
    assert protocol.method_hyperparameters("scissorhands_cal", loaded) == {
        **scissorhands,
        "calibration": "temperature",
    }
    assert protocol.method_hyperparameters("scissorhands_soft", loaded) == scissorhands


def test_a_protocol_file_anywhere_is_named_after_its_stem(tmp_path):
    path = _write(tmp_path / "audit_mine.py", _settings(pool_size=100, candidates=20))
    mine = protocol.load_protocol(path)
    assert mine.name == "mine" and mine.pool_size == 100 and mine.candidates == 20
    assert protocol.method_hyperparameters("ft", mine) == {}  # release defaults
    other = protocol.load_protocol(_write(tmp_path / "plain.py", _settings()))
    assert other.name == "plain"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"pool_size": 3}, r"protocol.pool_size must be an integer in \[4, 1437\], got 3"),
        ({"pool_size": 1438}, r"protocol.pool_size must be an integer in \[4, 1437\]"),
        ({"candidates": 1}, r"protocol.candidates must be an integer >= 2, got 1"),
        ({"candidates": 399}, r"at most pool_size - 2 = 398\), got 399"),
        ({"model": "resnet18"}, r"protocol.model must be one of 'digits_cnn', 'digits_mlp'"),
        ({"epochs": 0}, r"protocol.epochs must be an integer >= 1, got 0"),
        ({"lr": -0.1}, r"protocol.lr must be a finite number > 0, got -0.1"),
        ({"weight_decay": -1.0}, r"protocol.weight_decay must be a finite number >= 0"),
        ({"batch_size": 2.5}, r"protocol.batch_size must be an integer >= 1, got 2.5"),
        ({"why": ""}, r"protocol.why must be a non-empty string"),
        ({"epoch": 3}, r"unknown key protocol.epoch; known keys: pool_size, candidates"),
    ],
)
def test_a_bad_protocol_value_is_named_with_its_file(tmp_path, changes, match):
    path = _write(tmp_path / "audit_bad.py", _settings(**changes))
    with pytest.raises(ValueError, match=match) as err:
        protocol.load_protocol(path)
    assert str(path) in str(err.value)


def test_a_missing_key_or_section_and_a_broken_file_are_refused(tmp_path):
    settings = _settings()
    del settings["lr"]
    with pytest.raises(ValueError, match="protocol.lr is missing"):
        protocol.load_protocol(_write(tmp_path / "a.py", settings))
    (tmp_path / "b.py").write_text("CONFIG = {'protocol': {}, 'method': {}}\n")
    with pytest.raises(ValueError, match="holds a 'protocol' dict and a 'methods' dict"):
        protocol.load_protocol(tmp_path / "b.py")
    (tmp_path / "c.py").write_text("import nothing_here\n")
    with pytest.raises(ValueError, match="c.py failed to load: ModuleNotFoundError"):
        protocol.load_protocol(tmp_path / "c.py")
    (tmp_path / "d.py").write_text("SETTINGS = {}\n")
    with pytest.raises(ValueError, match="defines no CONFIG dict"):
        protocol.load_protocol(tmp_path / "d.py")


@pytest.mark.parametrize(
    ("methods", "match"),
    [
        ({"retrain": {}}, r"unknown method methods.retrain; choose from"),
        ({"scissorhands_cal": {}}, r"unknown method methods.scissorhands_cal"),
        ({"ft": {"lrr": 0.1}}, r"methods.ft: ft has no hyperparameter\(s\) \['lrr'\]"),
        ({"ft": [0.1]}, r"methods.ft must be a dict"),
        ({"scissorhands": {"sparsity": 1.5}}, r"methods.scissorhands: .*sparsity"),
        ({"scissorhands": {"eligible": "(["}}, r"methods.scissorhands: eligible must be"),
    ],
)
def test_a_bad_method_setting_is_refused_by_the_method(tmp_path, methods, match):
    with pytest.raises(ValueError, match=match):
        protocol.load_protocol(_write(tmp_path / "audit_bad.py", _settings(), methods))


def test_an_unknown_name_lists_the_installed_protocols(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError, match="'digits_large'.*digits10, digits_cnn_small, digits_small"
    ):
        protocol.load_protocol("digits_large")
    with pytest.raises(ValueError, match="neither an audit protocol's name nor a config file"):
        protocol.load_protocol("somewhere/digits_small")  # a path is a path, never a name


def test_protocols_of_one_name_or_none_are_refused(tmp_path):
    copy = _write(tmp_path / "audit_digits_small.py", _settings())
    with pytest.raises(ValueError, match=r"two protocols are named \['digits_small'\]"):
        protocol.load_protocols(["digits_small", copy])
    with pytest.raises(ValueError, match="give one or more protocols"):
        protocol.load_protocols([])
    with pytest.raises(ValueError, match="give one or more protocols"):
        protocol.load_protocols("digits_small")  # a string is not a list of names


def test_the_classifier_commands_refuse_a_protocol_config():
    with pytest.raises(ValueError, match="is an audit config .* scissorhands audit/tune"):
        load_config("audit_digits_small")


def test_the_audit_model_is_a_package_model():
    assert shs.models.DigitsMLP is protocol.DigitsMLP
    assert "DigitsMLP" in shs.models.__all__


def test_the_convolutional_protocol_builds_its_model_and_population():
    cnn = audit.load_protocol("digits_cnn_small")
    assert cnn.model == "digits_cnn" and cnn.weight_decay == 0.0
    model = audit.build_model(cnn)
    params, state = model.init(jax.random.key(0))
    shapes = jax.tree.map(np.shape, params)
    assert shapes["Conv_0"]["kernel"] == (3, 3, 1, 32)
    assert shapes["Dense_1"]["kernel"] == (128, 10)
    data = audit.make_population(cnn, 16, seed=0)
    assert data.pool["image"].shape == (200, 8, 8, 1) and data.pool["label"].shape == (200,)
    assert data.members.shape == (16, 200) and data.candidates.sum() == 40
    assert np.all(data.members.sum(1) == 100)  # each model trains on 100 digits ...
    assert np.all(data.forgets.sum(1) == 20)  # ... and forgets 20 of them
    assert np.all(data.members.sum(0) == 8)  # complementary pairs: every digit in half
    logits = model.logits(params, state, jnp.asarray(data.pool["image"][:5]))
    assert logits.shape == (5, 10)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_scissorhands_trims_all_but_the_first_layer(name):
    loaded = audit.load_protocol(name)
    params, _ = audit.build_model(loaded).init(jax.random.key(0))
    eligible = audit.method_hyperparameters("scissorhands", loaded)["eligible"]
    mask = shs.eligible_mask(params, eligible)
    first = {"digits_cnn": "Conv_0", "digits_mlp": "hidden1"}[loaded.model]
    for layer, leaves in mask.items():
        assert all(v == (layer != first) for v in jax.tree.leaves(leaves)), (layer, leaves)
