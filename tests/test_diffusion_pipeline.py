"""diffusion-train -> diffusion-unlearn -> diffusion-evaluate through the CLI: digits
offline, CIFAR-10 mocked by tfds; resume to the same bits, refusals, config keys."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

import scissorhands_jax as shs
from scissorhands_jax import cli
from scissorhands_jax import diffusion as dm
from scissorhands_jax.data import load_digits10
from scissorhands_jax.experiment import generation as dif
from scissorhands_jax.experiment.config import load_config
from scissorhands_jax.models.adapters import predict_probs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]  # end to end

CONFIGS = Path(__file__).resolve().parents[1] / "scissorhands_jax" / "configs"
DIGITS = str(CONFIGS / "digits_ddpm_class0.py")
CIFAR10 = str(CONFIGS / "cifar10_ddpm_class0.py")
# one UNet level and a few steps: compiles in seconds on the 2-core CI machine. 200
# images give 3 batches of 64 per epoch (2 of the retain set), so 6 steps cross epochs.
TINY_UNET = ["unet.ch=8", "unet.ch_mult=[1]", "unet.num_res_blocks=0", "unet.attn_resolutions=[8]"]
TINY = [
    *TINY_UNET,
    "data.limit_train=200",
    "data.limit_test=100",
    "train.steps=6",
    "retrain.steps=6",
    "train.checkpoint_every=3",
    "retrain.checkpoint_every=3",
    "train.ema_decay=0.9",  # the original keeps an EMA, the oracle does not
    "classifier.epochs=2",
    "classifier.checkpoint_every=3",
    "sample.per_class=3",
    "sample.num_steps=2",
    "scissorhands.steps=2",
    "finetune.steps=2",
]
SETS = [x for item in TINY for x in ("--set", item)]


def _cli(*argv: str) -> int:
    return cli.main([*argv, "--no-progress"])


def _setup(*overrides: str):
    cfg = load_config(DIGITS, smoke=True, overrides=[*TINY, *overrides], kind="diffusion")
    data = dif.build_data(cfg, progress=False)
    return cfg, data, dif.build_model(cfg, data)


def _final_tree(run: Path, role: str) -> dict:
    """The latest checkpoint of a training role, read through the commands' own code."""
    cfg, data, model = _setup()
    if role == "classifier":
        judge, _ = dif.build_judge(cfg, data)
        fresh = dif.classifier_setup(cfg, data, judge, abstract=True)[3]
    else:
        fresh = dif.generator_setup(cfg, role, data, model, abstract=True)[3]
    with dif.checkpoints(run, role, cfg, data) as ck:
        return dif.restore(ck, fresh.tree())[0]


def _digits_arrays(part: str) -> dict[str, np.ndarray]:
    """The first 200 training digits in [-1, 1], straight from scikit-learn's split."""
    train = load_digits10("random10", 0).train
    x, y = train["image"][:200] * 2.0 - 1.0, train["label"][:200]
    keep = y != 0 if part == "retain" else np.ones_like(y, bool)
    return {"image": x[keep].astype(np.float32), "label": y[keep]}


def _assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and one stopped at step 1 and resumed (with the step-1 tree)."""
    root = tmp_path_factory.mktemp("ddpm")
    whole, parts = root / "whole", root / "parts"
    train = ["diffusion-train", DIGITS, "--smoke", *SETS, "--out"]
    assert _cli(*train, str(whole)) == 0
    assert _cli(*train, str(parts), "--until-step", "1") == 0
    for role in dif.ROLES:
        assert dif.committed_steps(parts, role) == [1]
    step1 = _final_tree(parts, "original")
    assert _cli(*train, str(parts), "--resume") == 0
    return whole, parts, step1


def test_resumed_training_is_bit_identical(runs):
    whole, parts, _ = runs
    for role in dif.ROLES:
        _assert_trees_equal(_final_tree(whole, role), _final_tree(parts, role))
        log = json.loads((parts / role / "log.json").read_text())
        assert [s["to_step"] for s in log["segments"]][0] == 1 and log["complete"]
    # the one TrainState of classifiers and diffusion models (no model state here: {})
    assert set(_final_tree(whole, "original")) == {"params", "model_state", "opt_state", "ema"}
    assert set(_final_tree(whole, "retrain")) == {"params", "model_state", "opt_state"}


def test_training_equals_the_library_loop_and_the_ema_formula(runs):
    whole, _, step1 = runs
    cfg, _, model = _setup()
    key = jax.random.key(cfg["train"]["seed"])
    init = model.init(jax.random.fold_in(key, 0))[0]
    for role, part in (("original", "train"), ("retrain", "retain")):
        reference, _ = dm.train_diffusion(  # an independent data path: arrays, not the loader
            model,
            init,
            dm.diffusion_source(_digits_arrays(part), 64),
            key=jax.random.fold_in(key, 1),
            steps=6,
            lr=cfg["train"]["lr"],
            grad_clip=cfg["train"]["grad_clip"],
        )
        _assert_trees_equal(_final_tree(whole, role)["params"], reference)
    # after one step, EMA = d * theta_0 + (1 - d) * theta_1 (d = 0.9)
    d = np.float32(0.9)
    for e, p0, p1 in zip(*map(jax.tree.leaves, (step1["ema"], init, step1["params"])), strict=True):
        want = d * np.asarray(p0) + (np.float32(1) - d) * np.asarray(p1)
        np.testing.assert_allclose(np.asarray(e), want, rtol=1e-6, atol=1e-7)
    moved = jax.tree.map(lambda e, p: not np.array_equal(e, p), step1["ema"], init)
    assert any(jax.tree.leaves(moved))


def test_existing_run_and_other_config_are_refused(runs, capsys):
    whole, _, _ = runs
    before = {role: dif.committed_steps(whole, role) for role in dif.ROLES}
    assert _cli("diffusion-train", DIGITS, "--smoke", *SETS, "--out", str(whole)) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds checkpoints" in err and "--resume" in err and len(err.splitlines()) == 1
    assert {role: dif.committed_steps(whole, role) for role in dif.ROLES} == before
    argv = ["diffusion-train", DIGITS, "--smoke", *SETS, "--out", str(whole), "--resume"]
    assert _cli(*argv, "--set", "train.lr=0.01", "--only", "original") == 2
    err = capsys.readouterr().err.strip()
    assert "different run: schedule.lr: saved 0.002, now 0.01" in err
    assert len(err.splitlines()) == 1
    assert _cli(*argv, "--set", "data.random_flip=True", "--only", "retrain") == 2
    assert "schedule.random_flip: saved False, now True" in capsys.readouterr().err


def test_unlearn_and_evaluate_end_to_end(runs, capsys, monkeypatch):
    whole = runs[0]
    common = [DIGITS, "--smoke", *SETS, "--run", str(whole)]
    for method in ("scissorhands", "finetune"):  # finetune reuses the training step
        assert _cli("diffusion-unlearn", *common, "--method", method) == 0
    assert _cli("diffusion-unlearn", *common, "--method", "finetune") == 2
    assert "already holds an unlearned model" in capsys.readouterr().err
    # the saved model is the library's result on the original's published (EMA) weights
    cfg, data, model = _setup()
    original = _final_tree(whole, "original")["ema"]
    s = cfg["scissorhands"]  # the config's flat names, mapped onto the settings by hand
    reference = dm.scissorhands_diffusion(
        model,
        original,
        retain=data.source("retain", 64),
        forget=data.source("forget", 64),
        key=jax.random.key(0),
        trim=shs.TrimSettings(sparsity=s["sparsity"], prune_num=s["prune_num"],
                              reinit=s["reinit"]),
        projection=shs.ProjectionSettings(projection=s["projection"], margin=s["margin"],
                                          eps=s["eps"], memory_num=s["memory_num"]),
        repair=shs.AdamRepairSettings(lr=s["lr"], steps=s["steps"], lam=s["lam"],
                                      batch_size=s["batch_size"], grad_clip=s["grad_clip"],
                                      memory_every=s["memory_every"], log_every=s["log_every"]),
        objective=dm.DiffusionObjective(s["objective"], s["anchor"], s["saliency_guidance"]),
        eligible=s["eligible"],
        trainable=s["trainable"],
    )  # fmt: skip
    saved = dif.load_unlearned(whole, "scissorhands", cfg, data, original)
    _assert_trees_equal(saved, reference.params)
    log = json.loads((whole / "scissorhands" / "log.json").read_text())
    assert log["rte_s"] > 0 and log["mask_entries"] == reference.log[0]["reinitialised"] > 0
    assert log["settings"] == json.loads(json.dumps(cfg["scissorhands"]))

    pixels = lambda x: np.asarray(x).reshape(len(x), -1)[:, ::8]  # noqa: E731  (8 features)
    monkeypatch.setitem(sys.modules, "fidhook", types.SimpleNamespace(pixels=pixels))
    capsys.readouterr()
    assert _cli("diffusion-evaluate", *common, "--fid-features", "fidhook:pixels") == 0
    assert "| scissorhands |" in capsys.readouterr().out
    result = json.loads((whole / "evaluation.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["retrain", "original", "scissorhands", "finetune"]
    for row in rows.values():
        assert 0 <= row["forget_share"] <= 100 and 0 <= row["other_acc"] <= 100
        assert np.isfinite(row["frechet"]) and np.isfinite(row["fid"]) and row["rte_s"] > 0
    for name in ("before_after.png", "grid_original.png", "grid_finetune.png"):
        assert (whole / name).is_file()
    # the original's row, recomputed from the checkpoints with the library's pieces
    judge, _ = dif.build_judge(cfg, data)
    j_params, j_state = dif.load_judge(whole, cfg, data, judge)
    labels = np.repeat(np.arange(10), 3)
    x = dm.sample(model, original, jax.random.key(0), labels, num_steps=2, guidance_scale=2.0)
    probs = predict_probs(judge, j_params, j_state, (jnp.asarray(x) + 1.0) / 2.0)  # [0, 1]
    want = dm.generation_metrics(probs, labels, 0)
    for k in ("forget_share", "other_acc"):
        assert rows["original"][k] == pytest.approx(want[k])


def test_cifar10_smoke_trains_on_mocked_tfds(tmp_path):
    run = tmp_path / "cifar"
    sets = [*TINY_UNET[:3], "unet.attn_resolutions=[]", "classifier.width=4"]
    sets += ["train.steps=2", "retrain.steps=2", "sample.per_class=2"]
    argv = [x for item in sets for x in ("--set", item)]
    # the generators (the judge's training is the digits one with a ResNet: slow to compile)
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        for role in ("original", "retrain"):
            assert (
                _cli(
                    "diffusion-train", CIFAR10, "--smoke", *argv, "--out", str(run), "--only", role
                )
                == 0
            )  # noqa: E501
    request = json.loads((run / "run.json").read_text())
    assert request["data"] == "cifar10" and request["image_shape"] == [32, 32, 3]
    assert request["num_forget"] == 64 - request["num_retain"] > 0
    for role in ("original", "retrain"):
        log = json.loads((run / role / "log.json").read_text())
        assert log["complete"] and np.isfinite(log["segments"][-1]["log"][-1]["loss"])
        assert dif.committed_steps(run, role) == [2]


def test_unknown_keys_and_wrong_kinds_are_refused(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("CONFIG = {'data': {'name': 'digits10'}, 'diffusion': {}, 'unet': {'chh': 3}}\n")
    out = tmp_path / "never"
    assert _cli("diffusion-train", str(bad), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown config key 'unet.chh'" in err and len(err.splitlines()) == 1
    assert _cli("diffusion-train", DIGITS, "--set", "sample.per_klass=3", "--out", str(out)) == 2
    assert "unknown config key 'sample.per_klass'" in capsys.readouterr().err
    assert _cli("diffusion-train", str(CONFIGS / "digits10_class0.py"), "--out", str(out)) == 2
    assert "is a classifier config" in capsys.readouterr().err
    assert _cli("train", DIGITS, "--out", str(out)) == 2
    assert "is a diffusion config" in capsys.readouterr().err
    assert not out.exists()  # refused before any work
    assert _cli("diffusion-unlearn", DIGITS, "--run", str(out)) == 2
    assert "does not exist; train one first with: scissorhands diffusion-train" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("path", [DIGITS, CIFAR10])
def test_configs_are_keywords_of_the_library(path):
    import inspect

    from scissorhands_jax.diffusion.baselines import method_defaults

    cfg = load_config(path, kind="diffusion")
    for section, fn, own in (
        ("train", dm.train_diffusion, dif.PIPELINE_KEYS["train"]),
        ("sample", dm.sample, dif.PIPELINE_KEYS["sample"]),
    ):
        names = set(inspect.signature(fn).parameters)
        assert set(cfg[section]) - set(own) <= names, (section, set(cfg[section]) - names)
    for section in dm.DIFFUSION_METHODS:  # the methods' sections: their hyperparameters
        assert set(cfg[section]) - {"seed"} == set(method_defaults(section)), section
    assert set(cfg["unet"]) <= set(inspect.signature(dm.UNet).parameters)
    doc = Path(path).read_text().split('"""')[1]
    for command in ("diffusion-train $C", "diffusion-unlearn $C", "diffusion-evaluate $C"):
        assert command in doc
    smoke = load_config(path, smoke=True, kind="diffusion")
    assert smoke["train"]["steps"] <= 20 and smoke["scissorhands"]["steps"] <= 5


def test_generate_demo_smoke_runs_the_three_commands(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["generate-demo", "--out", str(out), "--smoke", *SETS]
    argv += ["--methods", "scissorhands", "finetune"]
    assert _cli(*argv) == 0
    printed = capsys.readouterr().out
    assert "| scissorhands |" in printed and "lower is better" in printed
    rows = [r["model"] for r in json.loads((out / "evaluation.json").read_text())["rows"]]
    assert rows == ["retrain", "original", "scissorhands", "finetune"]
    for role in ("original", "retrain", "classifier", "scissorhands", "finetune"):
        assert dif.committed_steps(out, role), role
    assert (out / "before_after.png").is_file()
    assert _cli(*argv) == 2  # the run exists: diffusion-train refuses it before any work
    assert "pass --resume" in capsys.readouterr().err
