"""train -> unlearn -> evaluate through the CLI, on CIFAR-10 mocked by tfds (no download),
and on the digits config: what each command refuses before any work, and what a run
keeps (an evaluation, the time of a killed part, no model without its checkpoint)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import DIGITS, err_line

import scissorhands_jax as shs
from scissorhands_jax import cli
from scissorhands_jax._checkpoint import Checkpoints
from scissorhands_jax.experiment.config import SCHEMAS, load_config

# orbax's parallel reads of a damaged checkpoint leave asyncio callbacks that fire after
# their event loop closed (reported at a later garbage collection, in any test)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CONFIGS = Path(__file__).resolve().parents[1] / "scissorhands_jax" / "configs"
CIFAR10 = str(CONFIGS / "cifar10_random10.py")
# a smaller network and fewer steps than the config's SMOKE, for the 2-core CI machine
TINY = ["--set", "model.width=4", "--set", "train.epochs=1", "--set", "retrain.epochs=1"]
MOCK_EXAMPLES = 96


def _mock():
    return tfds.testing.mock_data(
        num_examples=MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE
    )


def _cli(*argv: str) -> int:
    return cli.main([*argv, "--no-progress"])


def _params(run: Path, role: str, *overrides: str) -> list[np.ndarray]:
    """The final parameters of a run, read through the same code as `unlearn`."""
    from scissorhands_jax.experiment import pipeline as pipe

    cfg = load_config(CIFAR10, smoke=True, overrides=[*TINY[1::2], *overrides])
    with _mock():
        split = pipe.build_split(cfg, progress=False)
    model = pipe.build_model(cfg, split.dataset)
    params, _ = pipe.load_trained(run, role, cfg, split, model)
    return [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.mark.slow  # end to end
def test_train_unlearn_evaluate_chain(tmp_path, capsys):
    run = tmp_path / "run"
    common = [CIFAR10, "--smoke", *TINY]
    with _mock():
        assert _cli("train", *common, "--out", str(run)) == 0
        # a missing checkpoint, and one written under other settings: one-line errors
        assert _cli("evaluate", *common, "--run", str(run)) == 2
        err = capsys.readouterr().err.strip()
        assert "no unlearned checkpoint" in err and "scissorhands unlearn" in err
        assert _cli("unlearn", *common, "--set", "train.lr=0.2", "--run", str(run)) == 2
        err = capsys.readouterr().err.strip()
        assert "different run: schedule.lr: saved 0.1, now 0.2" in err
        assert len(err.splitlines()) == 1
        assert _cli("unlearn", *common, "--run", str(run)) == 0
        assert _cli("evaluate", *common, "--run", str(run)) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| unlearned \| [\d.]+ \|", out)
    result = json.loads((run / "evaluation.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["retrain", "original", "unlearned"]
    assert result["versions"]["jax"] == jax.__version__  # what made the numbers
    for row in result["rows"]:
        for key in ("UA", "RA", "TA", "MIA_entropy", "MIA_confidence"):
            assert 0.0 <= row[key] <= 100.0
        assert row["rte_s"] > 0
    assert result["rows"][0]["avg_gap"] == 0.0
    # the request is saved beside the run and re-derivable: retain = all - val - forget
    forget = np.load(run / "forget_indices.npy")
    val = np.load(run / "val_indices.npy")
    info = json.loads((run / "split.json").read_text())
    assert forget.size == info["num_forget"] == int(0.1 * (info["num_train"] - val.size))
    assert info["num_retain"] == info["num_train"] - val.size - forget.size
    assert np.array_equal(np.load(run / "unlearned" / "forget_indices.npy"), forget)
    log = json.loads((run / "unlearned" / "log.json").read_text())
    assert log["log"][0]["epoch"] == "trim" and log["reinitialised"] > 0
    # the saved mask re-initialised only eligible leaves (layer3, layer4, fc)
    from scissorhands_jax.experiment import pipeline as pipe

    cfg = load_config(CIFAR10, smoke=True, overrides=TINY[1::2])
    with _mock():
        split = pipe.build_split(cfg, progress=False)
    _, _, mask = pipe.load_unlearned(run, cfg, split, pipe.build_model(cfg, split.dataset))
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
        name = jax.tree_util.keystr(path)
        if np.any(np.asarray(leaf)):
            assert re.search(r"layer3|layer4|fc", name) and "bn" not in name, name
    # running train again on the same directory refuses without --resume
    with _mock():
        assert _cli("train", *common, "--out", str(run)) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow  # end to end
def test_resume_is_bit_identical(tmp_path):
    common = [CIFAR10, "--smoke", *TINY, "--set", "train.epochs=2", "--only", "original"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    with _mock():
        assert _cli("train", *common, "--out", str(whole)) == 0
        # stop mid-epoch 0 (2 batches of 64 per epoch), then resume across the milestone
        assert _cli("train", *common, "--out", str(parts), "--until-step", "1") == 0
        steps = sorted(int(p.name) for p in (parts / "original" / "checkpoints").iterdir())
        assert steps == [1]
        assert _cli("train", *common, "--out", str(parts), "--resume") == 0
    a, b = (_params(run, "original", "train.epochs=2") for run in (whole, parts))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    log = json.loads((parts / "original" / "log.json").read_text())
    assert [s["to_step"] for s in log["segments"]] == [1, 4] and log["complete"]


@pytest.mark.slow  # end to end
def test_corrupt_checkpoint_is_refused_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    common = [CIFAR10, "--smoke", *TINY]
    with _mock():
        assert _cli("train", *common, "--out", str(run), "--only", "original") == 0
    step_dir = max((run / "original" / "checkpoints").iterdir(), key=lambda p: int(p.name))
    for f in (step_dir / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"\0" * 16)
    with _mock():
        assert _cli("unlearn", *common, "--run", str(run)) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt" in err and str(step_dir) in err and len(err.splitlines()) == 1


@pytest.mark.slow  # end to end
def test_missing_pieces_give_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("CONFIG = {'data': {'name': 'cifar10'}, 'unlearn': {'lrr': 0.1}}\n")
    assert _cli("train", str(bad), "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown config key 'unlearn.lrr'" in err and len(err.splitlines()) == 1
    # a data set that is not prepared names the command that prepares it (no mock here)
    data = tmp_path / "tfds"
    assert _cli("train", CIFAR10, "--data-dir", str(data), "--out", str(tmp_path / "y")) == 2
    err = capsys.readouterr().err.strip()
    assert f"scissorhands prepare cifar10 --data-dir {data}" in err
    assert len(err.splitlines()) == 1
    # unlearning a run that was never trained
    with _mock():
        assert _cli("unlearn", CIFAR10, "--smoke", "--run", str(tmp_path / "none")) == 2
    assert "train one first" in capsys.readouterr().err


# The release's hyperparameter table, typed by hand: the reference for every config.
RELEASE_TABLE = {
    "cifar10_random10": ("cifar10", 0.10, 5e-3, 10, 0.97, 0.05, "layer3,layer4,fc", 1),
    "cifar10_random20": ("cifar10", 0.20, 4e-3, 10, 0.99, 0.01, "layer3,layer4,fc", 1),
    "cifar10_random50": ("cifar10", 0.50, 1e-3, 10, 0.97, 0.01, "layer3,layer4,fc", 10),
    "cifar100_random10": ("cifar100", 0.10, 5e-3, 10, 0.99, 1.0, "layer4,fc", 1),
    "cifar100_random20": ("cifar100", 0.20, 5e-3, 10, 0.99, 1.0, "layer4,fc", 1),
    "cifar100_random50": ("cifar100", 0.50, 1e-3, 10, 0.90, 0.01, "layer4,fc", 1),
    "svhn_random10": ("svhn_cropped", 0.10, 1e-3, 10, 0.90, 0.01, "layer3,layer4,fc", 1),
    "svhn_random20": ("svhn_cropped", 0.20, 1e-3, 10, 0.90, 0.01, "layer3,layer4,fc", 1),
    "svhn_class0": ("svhn_cropped", None, 1e-3, 10, 0.90, 0.1, "layer4,fc", 1),
    "celebahq_ids30": ("celeba_folder", None, 2e-4, 5, 0.95, 0.5, "layer4,fc", 10),
}


@pytest.mark.slow  # end to end
@pytest.mark.parametrize("name", sorted(RELEASE_TABLE))
def test_configs_match_the_spec_table(name):
    path = CONFIGS / f"{name}.py"
    cfg = load_config(path)
    dataset, fraction, lr, epochs, sparsity, lam, eligible, every = RELEASE_TABLE[name]
    u = cfg["unlearn"]
    assert cfg["data"]["name"] == dataset
    assert cfg["data"]["forget"]["fraction"] == fraction
    assert (u["lr"], u["epochs"], u["sparsity"], u["lam"]) == (lr, epochs, sparsity, lam)
    assert (u["eligible"], u["project_every"], u["memory_num"], u["prune_num"]) == (
        eligible,
        every,
        1,
        1,
    )
    assert (u["momentum"], u["weight_decay"]) == (0.9, 5e-4)
    assert u["batch_size"] == (8 if dataset == "celeba_folder" else 256)
    doc = path.read_text().split('"""')[1]
    assert "Reproduces:" in doc
    if dataset != "celeba_folder":  # a cell of the ResNet family: its commands are there
        assert f"C={name} " in doc and "_paper_resnet.py" in doc
        doc = (CONFIGS / "_paper_resnet.py").read_text().split('"""')[1]
    assert "scissorhands train $C" in doc
    assert "scissorhands unlearn $C" in doc and "scissorhands evaluate $C" in doc
    smoke = load_config(path, smoke=True)
    assert smoke["train"]["epochs"] <= 2 and smoke["unlearn"]["epochs"] == 1
    if dataset.startswith(("cifar", "svhn")):
        t, r = cfg["train"], cfg["retrain"]
        assert (t["epochs"], t["lr"], t["milestones"]) == (182, 0.1, [91, 136])
        assert (r["epochs"], r["lr"]) == (160, 0.1)
        assert cfg["data"]["val_fraction"] == 0.1


@pytest.mark.slow  # end to end
def test_config_files_hold_only_known_keys():
    kinds = {"classifier": 0, "diffusion": 0, "sd": 0}
    for path in sorted(CONFIGS.glob("*.py")):
        if path.name.startswith(("_", "audit_")):  # family bases and audit protocols are
            continue  # not pipeline configs
        kind = "diffusion" if ("_ddpm_" in path.name or "_text_" in path.name) else "classifier"
        kind = "sd" if path.name.startswith("sd_") else kind
        kinds[kind] += 1
        for smoke in (False, True):
            cfg = load_config(path, smoke=smoke, kind=kind)
            assert set(cfg) == {*SCHEMAS[kind], "config_path", "smoke"}
        other = "classifier" if kind != "classifier" else "diffusion"
        with pytest.raises(ValueError, match=f"is an? {kind} config"):
            load_config(path, kind=other)
    assert kinds["diffusion"] >= 3 and kinds["classifier"] >= 10 and kinds["sd"] == 2


@pytest.mark.slow  # end to end
def test_digits_config_selects_the_demo_forget_set():
    from scissorhands_jax.experiment import pipeline as pipe

    for scenario in ("random10", "class0"):
        cfg = load_config(CONFIGS / f"digits10_{scenario}.py")
        split = pipe.build_split(cfg, progress=False)
        reference = shs.data.load_digits10(scenario, 0)
        assert np.array_equal(split.indices.forget, reference.forget_idx)
        assert np.array_equal(split.indices.retain, np.sort(reference.retain_idx))
        assert np.array_equal(split.labels("test"), reference.test["label"])
        batch = next(split.source("forget", 8, shuffle=False).batches(None))
        np.testing.assert_array_equal(batch["image"], reference.forget["image"][:8])


@pytest.mark.slow  # end to end
def test_prepare_command(capsys, monkeypatch):
    import importlib.util

    assert _cli_plain("prepare", "digits10") == 0
    assert "nothing to prepare" in capsys.readouterr().out
    assert _cli_plain("prepare", "celeba_folder") == 2
    assert "ROOT/train/<identity>/" in capsys.readouterr().err
    assert _cli_plain("prepare", "mnist") == 2
    assert "unknown tfds data set" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(  # as on a machine without the prepare extra
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name)
    )
    assert _cli_plain("prepare", "cifar10", "--data-dir", "/nowhere") == 2
    err = capsys.readouterr().err
    assert "pip install tensorflow (or pip install '.[prepare]' in a clone)" in err


def _cli_plain(*argv: str) -> int:
    return cli.main(list(argv))


@pytest.mark.slow  # end to end
@pytest.mark.parametrize(
    "setting, named",
    [
        ("train.lr=10", ["diverged", "lower the learning rate"]),
        ("train.momentum=1.5", ["momentum"]),
    ],
)
def test_a_diverging_training_exits_with_one_line_and_no_complete_model(
    setting, named, tmp_path, capsys
):
    # lr 10 once ended "(complete) loss 9.0167" (chance is log 10 = 2.30); momentum 1.5
    # saved a "complete" model at a loss of 2.5e13
    digits = str(CONFIGS / "digits10_random10.py")
    out = tmp_path / "run"
    args = ["train", digits, "--smoke", "--only", "original", "--out", str(out)]
    assert _cli(*args, "--set", setting) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert all(word in err for word in named), err
    assert "complete" not in captured.out
    records = list(out.rglob("*.json"))
    assert not any(json.loads(p.read_text()).get("complete") is True for p in records)


# ------------------------------------- the digits config: refusals, and what a run keeps


def test_labels_that_do_not_fit_the_model_are_refused_before_training(tmp_path, capsys):
    out = tmp_path / "o"  # was "loss is nan; lower the learning rate" after training began
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    assert cli.main([*argv, "--set", "model.num_classes=2", "--no-progress"]) == 2
    err = err_line(capsys)
    assert "model.num_classes=2 is too few" in err and "labels run 0..9" in err
    assert not out.exists()


def test_a_training_run_without_its_final_checkpoint_is_an_error(tmp_path, capsys, monkeypatch):
    # whatever loses the save (a keep of 0 did), "complete" needs the checkpoint on disk
    monkeypatch.setattr(Checkpoints, "save", lambda self, step, tree, info=None: None)
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original"]
    assert cli.main([*argv, "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "checkpoint of step 46 is missing" in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "complete" not in captured.out


def test_a_resumed_run_counts_the_time_of_the_killed_part(tmp_path):
    out = tmp_path / "o"
    argv = ["train", DIGITS, "--smoke", "--out", str(out), "--only", "original", "--no-progress"]
    assert cli.main([*argv, "--until-step", "10"]) == 0
    first = json.loads((out / "original" / "log.json").read_text())["segments"][0]["time_s"]
    with Checkpoints(out / "original" / "checkpoints", identity={}) as ck:
        at_10 = ck.meta(10)["info"]["elapsed_s"]
    assert 0 < at_10 <= first
    (out / "original" / "log.json").unlink()  # what kill -9 leaves: checkpoints, no log
    assert cli.main([*argv, "--resume"]) == 0
    log = json.loads((out / "original" / "log.json").read_text())
    (segment,) = log["segments"]
    assert log["complete"] and segment["to_step"] == 46
    assert log["train_time_s"] == pytest.approx(at_10 + segment["time_s"], abs=0.05)


def test_evaluate_keeps_an_existing_evaluation(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "original").mkdir(parents=True)
    (run / "evaluation.json").write_text('{"rows": ["earlier"]}')
    assert cli.main(["evaluate", DIGITS, "--smoke", "--run", str(run), "--no-progress"]) == 2
    assert "--overwrite" in err_line(capsys)
    assert (run / "evaluation.json").read_text() == '{"rows": ["earlier"]}'
