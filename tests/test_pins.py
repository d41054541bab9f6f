"""Regression pins: what the methods, the baselines and the configs give for fixed keys
on tiny inputs, across refactors (same key, same result).

They are no correctness evidence on their own (that is the job of the independent-reference
tests in the other files); they show that a refactor changed nothing. Three groups, each
pinned in a file of ``tests/pins/``:

* ``pins.json``: Scissorhands on a CNN and a BatchNorm net, resumable training, and the
  diffusion training, Scissorhands and baselines (the ``case_*`` functions below);
* ``baselines.json``: every classifier baseline on a BatchNorm model, written against the
  package as it stood at commit 9a87e9c (extracted with ``git archive 9a87e9c`` into a
  separate folder and put first on ``PYTHONPATH``), before the baselines moved onto the
  shared training loop and declared their hyperparameters: per method, the fingerprint of
  the unlearned parameters and model state (the statistics count), the log without its
  timings, and the method's default hyperparameters as the comparison discovered them;
* ``configs.json``: per experiment config, the dict
  :func:`scissorhands_jax.experiment.config.load_config` returned, without and with
  ``SMOKE`` (``config_path`` left out), from the package and config files as they stood at
  commit 9a87e9c, before the configs were rewritten as families.

Floats are compared within the measured spread across CPUs and XLA builds; masks, counts,
phases and hyperparameters exactly (``tests/_pinning.py``). Settings added since a pin,
each with a default that keeps the pinned behaviour, are checked to hold that default and
then left out. ``python tests/test_pins.py --write [cases|baselines]`` records new pins of
the methods (both groups without an argument), which is only right for an intended change
of behaviour explained in its commit; a config whose resolved dict changes on purpose
needs its entry in ``configs.json`` rewritten by hand and a commit that says why.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pinning import assert_matches_pin

import scissorhands_jax as shs
from scissorhands_jax import diffusion as dm
from scissorhands_jax.baselines import METHODS
from scissorhands_jax.experiment.config import load_config

PINS = Path(__file__).parent / "pins"
CONFIGS = Path(__file__).resolve().parents[1] / "scissorhands_jax" / "configs"


def fingerprint(tree) -> list[list[float]]:
    """Per leaf: sum, sum of squares, and the first three entries (float64)."""
    out = []
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        x = np.asarray(leaf, np.float64).ravel()
        out.append([float(x.sum()), float((x**2).sum()), *map(float, x[:3])])
    return out


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


# --------------------------------------------------------------- the methods (pins.json)


def _log_values(log) -> list[float]:
    keys = ("loss_retain", "loss_forget", "loss", "reinitialised", "selected")
    vals = []
    for entry in log:
        for k in keys:
            v = entry.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                vals.append(float(v))
    return vals


def _digits(n_retain=96, n_forget=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_retain + n_forget, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, n_retain + n_forget).astype(np.int32)
    data = {"image": x, "label": y}
    retain = {k: v[:n_retain] for k, v in data.items()}
    forget = {k: v[n_retain:] for k, v in data.items()}
    return retain, forget


def _classifier(bn: bool):
    module = _BNNet() if bn else shs.DigitsCNN()
    model = shs.linen_model(module, jnp.zeros((1, 8, 8, 1), jnp.float32))
    retain, forget = _digits()
    params, state = model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source({k: np.concatenate([retain[k], forget[k]]) for k in retain}, 32),
        key=jax.random.key(1),
        epochs=1,
        tx=shs.sgd(0.05),
    )
    return model, params, state, retain, forget


def case_scissorhands_cnn():
    model, params, state, retain, forget = _classifier(bn=False)
    res = shs.scissorhands(
        model, params, state, retain=retain, forget=forget, key=jax.random.key(3),
        eligible="all_but_first_conv",
        trim=shs.TrimSettings(sparsity=0.9),
        repair=shs.RepairSettings(epochs=2),
        projection=shs.ProjectionSettings(memory_num=2, project_every=2),
        training=shs.TrainingSettings(batch_size=32, progress=False),
    )  # fmt: skip
    return {"params": res.params, "mask": res.mask, "log": _log_values(res.log)}


def case_scissorhands_bn():
    model, params, state, retain, forget = _classifier(bn=True)
    res = shs.scissorhands(
        model, params, state, retain=retain, forget=forget, key=jax.random.key(4),
        trim=shs.TrimSettings(sparsity=0.8, reinit="torch", saliency_train_mode=True),
        repair=shs.RepairSettings(epochs=2, lam=0.1),
        projection=shs.ProjectionSettings(projection="orthogonal_on_conflict"),
        training=shs.TrainingSettings(batch_size=32, progress=False),
    )  # fmt: skip
    return {
        "params": res.params,
        "state": res.model_state,
        "mask": res.mask,
        "log": _log_values(res.log),
    }


def case_fit_resumable():
    model, params, state, retain, _ = _classifier(bn=True)
    source = shs.data.array_source(retain, 32)
    tx = shs.step_decay_sgd(0.05, steps_per_epoch=source.num_batches, milestones=(1,))
    st = shs.TrainState(0, params, state, tx.init(params))
    half, log1 = shs.fit_resumable(
        model.loss, st, source, key=jax.random.key(5), epochs=2, tx=tx, stop_step=4
    )
    end, log2 = shs.fit_resumable(model.loss, half, source, key=jax.random.key(5), epochs=2, tx=tx)
    return {
        "params": end.params,
        "state": end.model_state,
        "step": [float(end.step)],
        "log": _log_values(log1 + log2),
    }


def _toy_diffusion():
    base = -np.ones((3, 8, 8, 1), np.float32)
    base[0, :4] = 1
    base[1, :, :4] = 1
    base[2, 2:6, 2:6] = 1
    y = np.repeat(np.arange(3), 8).astype(np.int32)
    noise = 0.1 * np.random.default_rng(0).standard_normal((y.size, 8, 8, 1))
    data = {"image": np.clip(base[y] + noise, -1, 1).astype(np.float32), "label": y}
    sched = dm.make_schedule("linear", 20, beta_start=2e-3, beta_end=0.4)
    unet = dm.UNet(num_classes=3, ch=8, ch_mult=(1,), attn_resolutions=(8,), num_res_blocks=0)
    model = dm.diffusion_model(
        unet, image_shape=(8, 8, 1), num_classes=3, schedule=sched, p_uncond=0.1
    )
    params, log = dm.train_diffusion(
        model, model.init(jax.random.key(0))[0], dm.diffusion_source(data, 8),
        key=jax.random.key(1), steps=3, lr=3e-3, log_every=2,
    )  # fmt: skip
    retain = {k: v[data["label"] != 2] for k, v in data.items()}
    forget = {k: v[data["label"] == 2] for k, v in data.items()}
    return model, params, log, retain, forget


def case_diffusion_train():
    _, params, log, _, _ = _toy_diffusion()
    return {"params": params, "log": _log_values(log)}


def case_diffusion_scissorhands():
    model, params, _, retain, forget = _toy_diffusion()
    contrast = dm.scissorhands_diffusion(
        model, params, retain=retain, forget=forget, key=jax.random.key(3),
        trim=shs.TrimSettings(sparsity=0.9, reinit="model"),
        projection=shs.ProjectionSettings(projection="gem", memory_num=2),
        repair=shs.AdamRepairSettings(lam=0.5, lr=1e-3, steps=4, batch_size=4, memory_every=2,
                                      log_every=3),
        objective=dm.DiffusionObjective("contrast", saliency_guidance=2.0),
    )  # fmt: skip
    anchor = dm.scissorhands_diffusion(
        model, params, retain=retain, forget=forget, key=jax.random.key(4),
        trim=shs.TrimSettings(sparsity=0.95, reinit="trunc_normal"),
        repair=shs.AdamRepairSettings(lam=1.0, lr=1e-3, steps=3, batch_size=4, grad_clip=1.0,
                                      log_every=2),
        objective=dm.DiffusionObjective("anchor", anchor="next", saliency_guidance=None),
        trainable="up_attn",
    )  # fmt: skip
    return {
        "contrast": contrast.params,
        "contrast_mask": contrast.mask,
        "contrast_log": _log_values(contrast.log),
        "anchor": anchor.params,
        "anchor_log": _log_values(anchor.log),
    }


def case_diffusion_baselines():
    model, params, _, retain, forget = _toy_diffusion()
    ft = dm.finetune_diffusion(
        model, params, retain=retain, key=jax.random.key(0), steps=2, batch_size=4
    )
    rt = dm.retrain_diffusion(model, retain=retain, key=jax.random.key(1), steps=2, batch_size=4)
    sal = dm.salun_diffusion(
        model, params, retain=retain, forget=forget, key=jax.random.key(2), steps=2,
        batch_size=4, log_every=1, alpha=1e-3,
    )  # fmt: skip
    return {
        "ft": ft.params,
        "rt": rt.params,
        "salun": sal.params,
        "salun_mask": sal.mask,
        "log": _log_values(ft.log + rt.log + sal.log),
    }


def case_diffusion_resumable():
    model, _, _, retain, _ = _toy_diffusion()
    from scissorhands_jax._objective import adam_tx

    tx = adam_tx(1.0)
    source = dm.diffusion_source(retain, 4)
    params = model.init(jax.random.key(0))[0]
    st = shs.TrainState(0, params, {}, tx.init(params), params)
    common = dict(
        key=jax.random.split(jax.random.key(1), 3)[0],  # the data key of train_diffusion
        steps=6, tx=tx, lr=1e-3, ema_decay=0.9, log_every=2,
    )  # fmt: skip
    half, log1 = shs.fit_resumable(model.loss, st, source, stop_step=3, **common)
    end, log2 = shs.fit_resumable(model.loss, half, source, **common)
    return {"params": end.params, "ema": end.ema, "log": _log_values(log1 + log2)}


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def record_case(name):
    out = CASES[name]()
    return {k: (v if k.endswith("log") or k == "step" else fingerprint(v)) for k, v in out.items()}


@pytest.mark.slow  # end to end
@pytest.mark.parametrize("name", sorted(CASES))
def test_pinned_outputs(name):
    want = json.loads((PINS / "pins.json").read_text())[name]
    got = json.loads(json.dumps(record_case(name)))  # the JSON round trip the pins went through
    assert_matches_pin(got, want, name)


# -------------------------------------------------------- the baselines (baselines.json)


BASELINE_SETTINGS = {
    "retrain": {"lr": 0.05, "epochs": 2, "batch_size": 32},
    "ft": {"lr": 0.05, "epochs": 2, "batch_size": 32},
    "ga": {"lr": 0.01, "epochs": 2, "batch_size": 16},
    "rl": {"lr": 0.05, "epochs": 2, "batch_size": 32},
    "l1_sparse": {"alpha": 1e-3, "lr": 0.05, "epochs": 2, "batch_size": 32},
    "salun": {"ratio": 0.3, "lr": 0.05, "epochs": 2, "batch_size": 32},
    "iu": {"alpha": 5.0, "fisher_examples": 20, "chunk_size": 6, "batch_size": 32},
    "be": {"lr": 0.01, "epochs": 2, "batch_size": 16},
    "bs": {"bound": 0.2, "lr": 0.01, "epochs": 2, "batch_size": 16},
    "scrub": {"epochs": 2, "max_epochs": 1, "batch_size": 32, "forget_batch_size": 16},
    "scissorhands": {"epochs": 2, "batch_size": 32, "sparsity": 0.9, "lam": 0.1},
}
"""Small but non-trivial settings: several batches per epoch, two epochs, every phase."""


@functools.cache
def _problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(136, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 136).astype(np.int32)
    retain = {"image": x[:96], "label": y[:96]}
    forget = {"image": x[96:], "label": y[96:]}
    model = shs.linen_model(_BNNet(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    params, state = model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source({"image": x, "label": y}, 32),
        key=jax.random.key(1),
        epochs=1,
        tx=shs.sgd(0.05),
    )
    return model, params, state, retain, forget


def run_method(name: str):
    """The method's result on the pinned problem with key 7."""
    model, params, state, retain, forget = _problem()
    return METHODS[name](
        model,
        params,
        state,
        retain=retain,
        forget=forget,
        key=jax.random.key(7),
        **BASELINE_SETTINGS[name],
    )


def log_without_times(log) -> list[dict]:
    """The log's entries without their (machine-dependent) seconds."""
    return [{k: v for k, v in e.items() if not k.endswith("time_s")} for e in log]


BASELINE_ADDED = {
    "scissorhands": {
        "precision": "float32",
        "ties": "exact",
        "project_epochs": None,
        "calibration": "none",
    }
}
"""Hyperparameters added after the pins, with the defaults that keep the pinned results:
checked, then left out of the comparison."""


def method_defaults(name: str) -> dict:
    """The method's default hyperparameters as the comparison of the package reports them,
    without those of :data:`BASELINE_ADDED` (after checking their defaults)."""
    from scissorhands_jax.experiment import compare

    defaults = compare.method_defaults(name)
    for key, value in BASELINE_ADDED.get(name, {}).items():
        assert defaults.pop(key) == value, (name, key)
    return defaults


def record_baseline(name: str) -> dict:
    result = run_method(name)
    return {
        "params": fingerprint(result.params),
        "model_state": fingerprint(result.model_state),
        "log": log_without_times(result.log),
        "defaults": method_defaults(name),
    }


@pytest.mark.slow  # eleven methods trained end to end
@pytest.mark.parametrize("name", list(BASELINE_SETTINGS))
def test_baseline_matches_pin(name):
    want = json.loads((PINS / "baselines.json").read_text())[name]
    got = json.loads(json.dumps(record_baseline(name)))  # the JSON round trip the pins went through
    assert_matches_pin(got, want, name)


@pytest.mark.slow
def test_every_method_is_pinned():
    assert (
        set(json.loads((PINS / "baselines.json").read_text()))
        == set(METHODS)
        == set(BASELINE_SETTINGS)
    )


# ------------------------------------------------------------ the configs (configs.json)


CONFIG_PINS = json.loads((PINS / "configs.json").read_text())


CONFIG_ADDED = {
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
"""The same for the diffusion schema."""


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


CONFIG_METHODS = {"digits10_random10": _DIGITS_METHODS, "digits10_class0": _DIGITS_METHODS}
"""The ``methods`` section of each config that has one (the digits comparison's tuned
hyperparameters, as the digits-10 comparison ran them); every other config's is empty."""


def _without_added(cfg: dict, kind: str, name: str) -> dict:
    for (section, key), default in (
        CONFIG_ADDED if kind == "classifier" else DIFFUSION_ADDED
    ).items():
        assert cfg[section].pop(key) == default, (section, key)
    if kind == "classifier":
        assert cfg.pop("methods") == CONFIG_METHODS.get(name, {}), name
    elif cfg["text"] == TEXT_ADDED:
        cfg.pop("text")
    return cfg


@pytest.mark.parametrize("name", sorted(CONFIG_PINS))
def test_config_resolves_as_before(name):
    pinned = CONFIG_PINS[name]
    path = CONFIGS / f"{name}.py"
    assert path.is_file(), f"{path} is gone: every pinned config path must keep working"
    for smoke, section in ((False, "config"), (True, "smoke")):
        cfg = load_config(path, smoke=smoke, kind=pinned["kind"])
        assert cfg.pop("config_path") == name  # an installed config is recorded by name
        resolved = _as_json(_without_added(cfg, pinned["kind"], name))
        assert resolved == pinned[section], (name, section)


def test_every_config_is_pinned():
    # the audit protocols are pinned by hand in tests/test_audit_protocols.py, the SD
    # recipes against the release's numbers in tests/test_sd_recipes.py
    skip = ("_", "audit_", "sd_")
    configs = {p.stem for p in CONFIGS.glob("*.py") if not p.name.startswith(skip)}
    assert configs == set(CONFIG_PINS)


if __name__ == "__main__" and "--write" in sys.argv:
    groups = sys.argv[sys.argv.index("--write") + 1 :] or ["cases", "baselines"]
    print("package:", shs.__file__)
    if "cases" in groups:
        path = PINS / "pins.json"
        path.write_text(json.dumps({n: record_case(n) for n in sorted(CASES)}, indent=1) + "\n")
        print("wrote", path)
    if "baselines" in groups:
        path = PINS / "baselines.json"
        pins = {n: record_baseline(n) for n in BASELINE_SETTINGS}
        path.write_text(json.dumps(pins, indent=1) + "\n")
        print("wrote", path)
