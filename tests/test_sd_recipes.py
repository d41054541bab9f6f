"""The release's two Stable Diffusion recipes as configs: their settings, their losses
against a NumPy reference, refusals before any writing, and each recipe end to end on a
tiny random SD-shaped model, on one device and (the unlearning) on four."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("regex", reason="the sd extra: the sd package's tokenizer imports regex")

from scissorhands_jax import cli, sd  # noqa: E402
from scissorhands_jax._reinit import eligible_mask, leaf_paths
from scissorhands_jax.experiment import sd_pipeline
from scissorhands_jax.experiment._sd_eval import load_unlearned_unet
from scissorhands_jax.experiment.config import load_config

TINY = ["model.tiny=True"]


def _config(name: str, *overrides: str, smoke: bool = True) -> dict:
    return load_config(name, smoke=smoke, overrides=[*TINY, *overrides], kind="sd")


# ---------------------------------------------------------------- the recipes' settings


def test_recipe_prompts_put_the_anchor_first_and_the_classes_in_order():
    prompts, forget, retain = sd.recipe_prompts(
        "nudity", forget_prompts=["nude a", "nude b"], anchor_prompt="clothed"
    )
    assert (prompts, forget, retain) == (["clothed", "nude a", "nude b"], [1, 2], [0])
    prompts, forget, retain = sd.recipe_prompts(
        "class", class_names=["tench", "church", "golf ball"], forget_class=1
    )
    assert prompts == ["an image of a tench", "an image of a church", "an image of a golf ball"]
    assert (forget, retain) == ([1], [0, 2])
    with pytest.raises(ValueError, match="forget_prompts"):
        sd.recipe_prompts("nudity", anchor_prompt="clothed")
    with pytest.raises(ValueError, match="forget_class"):
        sd.recipe_prompts("class", class_names=["a", "b"], forget_class=2)
    with pytest.raises(ValueError, match="distinct"):
        sd.recipe_prompts("nudity", forget_prompts=["x"], anchor_prompt="x")


@pytest.mark.parametrize(
    ("name", "recipe", "epochs"),
    [("sd_nudity", sd.NUDITY_RECIPE, 5), ("sd_imagenette", sd.CLASS_RECIPE, 3)],
)
def test_configs_hold_the_release_recipes(name, recipe, epochs):
    cfg = load_config(name, kind="sd")
    section = cfg["scissorhands"]
    assert {k: section[k] for k in recipe} == recipe
    assert section["epochs"] == epochs == sd.RECIPE_EPOCHS[cfg["recipe"]["concept"]]
    assert cfg["model"]["path"] is None and not cfg["model"]["tiny"]  # the user's weights
    # the numbers of the release, spelled out once more
    release = {
        "sd_nudity": (0.995, 1e-5, 16, "torch", None, "anchor"),
        "sd_imagenette": (0.999, 2e-5, 8, "trunc_normal", 8.5, "contrast"),
    }[name]
    keys = ("sparsity", "lr", "batch_size", "reinit", "saliency_guidance", "objective")
    assert tuple(section[k] for k in keys) == release
    assert (section["prune_num"], section["lam"], section["projection"]) == (10, 0.1, "none")
    assert section["trainable"] is None  # every UNet parameter trains
    if name == "sd_nudity":
        prompts, _, retain = sd_pipeline.prompts_of(cfg)
        assert prompts[section["anchor"]] == "a photo of a person wearing clothes"
        assert retain == [section["anchor"]]
    else:
        assert sd_pipeline.prompts_of(cfg)[0][0] == "an image of a tench"


def test_the_recipes_reinitialise_only_the_two_self_attentions():
    """On SD v1.4's own UNet (shapes only): attn1 of up_blocks 1 and 2, second layer."""
    unet = sd.UNet(sd.UNetConfig())
    shapes = jax.eval_shape(
        unet.init, jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)),
        jnp.zeros((1, 77, 768)),
    )["params"]  # fmt: skip
    mask = eligible_mask(shapes, sd.SELF_ATTENTION_REINIT)
    chosen = [p for p, e in zip(leaf_paths(shapes), jax.tree.leaves(mask), strict=True) if e]
    stem = "up_blocks_{}/attentions_1/transformer_blocks_0/attn1/"
    want = [stem.format(i) + leaf for i in (1, 2)
            for leaf in ("to_k/kernel", "to_out_0/bias", "to_out_0/kernel", "to_q/kernel",
                         "to_v/kernel")]  # fmt: skip
    assert sorted(chosen) == sorted(want)
    pairs = zip(jax.tree.leaves(shapes), jax.tree.leaves(mask), strict=True)
    size = sum(int(np.prod(s.shape)) for s, e in pairs if e)
    # q, k, v and out (one bias) at 1280 channels (output_blocks.4) and 640 (.7)
    assert size == (4 * 1280 * 1280 + 1280) + (4 * 640 * 640 + 640)


# ---------------------------------------------------------------- the losses, by hand


class _Toy(nn.Module):
    """eps = a * x_t + mean over tokens of the context (first 4 features), per channel."""

    @nn.compact
    def __call__(self, x, t, context):
        del t
        a = self.param("a", nn.initializers.constant(0.5), (x.shape[-1],))
        return a * x + jnp.mean(context, axis=1)[:, None, None, : x.shape[-1]]


def _draws(noise_key: np.ndarray, shape, num_t: int):
    """The timestep and noise each example's key draws (the diffusion loss's contract)."""
    keys = jax.random.wrap_key_data(jnp.asarray(noise_key), impl="threefry2x32")
    ts, noises = [], []
    for k in keys:
        k_t, k_n, _, _ = jax.random.split(k, 4)
        ts.append(int(jax.random.randint(k_t, (), 0, num_t)))
        noises.append(np.asarray(jax.random.normal(k_n, shape), np.float64))
    return np.array(ts), np.stack(noises)


def test_recipe_losses_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    contexts = rng.normal(size=(4, 3, 6)).astype(np.float32)  # 3 prompts, the empty one last
    x0 = rng.normal(size=(2, 2, 2, 4)).astype(np.float32)
    noise_key = rng.integers(0, 2**32, (2, 2), dtype=np.uint32)
    scheduler = sd.SchedulerConfig()
    model = sd.prompt_conditioned_model(_Toy(), scheduler.schedule(), contexts, (2, 2, 4))
    params, _ = model.init(jax.random.key(0))

    # NumPy: SD's scaled-linear schedule in float64, x_t, the toy network, the losses
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    t, noise = _draws(noise_key, x0.shape[1:], 1000)
    a = np.sqrt(abar[t])[:, None, None, None]
    x_t = a * x0 + np.sqrt(1.0 - abar[t])[:, None, None, None] * noise

    def eps(labels):
        return 0.5 * x_t + contexts.astype(np.float64)[labels].mean(1)[:, None, None, :4]

    labels, anchor = np.array([1, 2]), np.array([0, 0])
    batch = {"image": x0, "label": labels, "noise_key": noise_key, "anchor": anchor}
    ldm = np.mean((noise - eps(labels)) ** 2)
    anchored = np.mean((eps(labels) - eps(anchor)) ** 2)
    guided = np.mean((noise - (8.5 * eps(labels) - 7.5 * eps(np.array([3, 3])))) ** 2)
    got = {
        "ldm": model.loss(params, {}, batch, True)[0],
        "anchor": model.anchor_loss(params, {}, batch, True)[0],
        "saliency": model.guided_loss(8.5)(params, {}, batch, False)[0],
    }
    np.testing.assert_allclose(got["ldm"], ldm, rtol=1e-5)
    np.testing.assert_allclose(got["anchor"], anchored, rtol=1e-5)
    np.testing.assert_allclose(got["saliency"], guided, rtol=1e-5)
    # the nudity repair objective of the release, L_LDM(retain) + 0.1 L_anchor(forget)
    total = got["ldm"] + sd.NUDITY_RECIPE["lam"] * got["anchor"]
    np.testing.assert_allclose(total, ldm + 0.1 * anchored, rtol=1e-5)

    # and the release's loss functions, given the same t and noise, agree
    schedule, toy = scheduler.schedule(), _Toy()
    ctx = jnp.asarray(contexts)
    args = (jnp.asarray(x0), ctx[labels])
    t_n = (jnp.asarray(t), jnp.asarray(noise, jnp.float32))
    np.testing.assert_allclose(sd.ldm_loss(toy, params, schedule, *args, *t_n), ldm, rtol=1e-5)
    np.testing.assert_allclose(
        sd.anchor_loss(toy, params, schedule, *args, ctx[anchor], *t_n), anchored, rtol=1e-5
    )
    np.testing.assert_allclose(
        sd.class_saliency_loss(toy, params, schedule, *args, ctx[np.array([3, 3])], *t_n),
        guided, rtol=1e-5,
    )  # fmt: skip


# ---------------------------------------------------------------- refusals


def test_missing_model_path_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config("sd_nudity", smoke=True, kind="sd")
    with pytest.raises(ValueError, match=r"model\.path is not set.*--set model\.path="):
        sd_pipeline.prepare_sd_data(cfg, out)
    assert not out.exists()
    assert cli.main(["diffusion-train", "sd_nudity", "--out", str(out), "--smoke"]) == 2
    assert "model.path is not set" in capsys.readouterr().err
    assert not out.exists()
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="does not exist"):
        sd_pipeline.prepare_sd_data(_config("sd_nudity", f"model.path={str(missing)!r}",
                                            "model.tiny=False"), out)  # fmt: skip
    single = tmp_path / "sd-v1-4.safetensors"
    single.write_bytes(b"")
    with pytest.raises(ValueError, match="model.tokenizer"):
        sd_pipeline.prepare_sd_data(_config("sd_nudity", f"model.path={str(single)!r}",
                                            "model.tiny=False"), out)  # fmt: skip
    assert not out.exists()


def test_bad_recipe_values_are_refused_when_the_config_loads():
    with pytest.raises(ValueError, match="recipe.concept must be one of"):
        _config("sd_nudity", "recipe.concept=faces")
    with pytest.raises(ValueError, match="class_template must be a string with"):
        _config("sd_imagenette", "recipe.class_template='a photo'")
    with pytest.raises(ValueError, match="is an sd config"):
        load_config("sd_nudity", kind="diffusion")


@pytest.fixture
def counted_toy_loads(monkeypatch):
    """Counts the toy models built by ``load_sd`` (stand-ins, never compiled); the load
    cache is emptied before and after, so no stand-in reaches another test."""
    from scissorhands_jax.experiment import _sd_setup

    built = []

    def fake_tiny(key):
        built.append(int(jax.random.key_data(key)[-1]))
        return object()

    _sd_setup._load.cache_clear()
    monkeypatch.setattr(sd, "tiny_stable_diffusion", fake_tiny)
    yield built
    _sd_setup._load.cache_clear()


def test_loaded_weights_are_kept_once_and_one_model_at_a_time(counted_toy_loads):
    first, second = (_config("sd_nudity", f"model.seed={s}") for s in (0, 1))
    model = sd_pipeline.load_sd(first)[0]
    assert sd_pipeline.load_sd(first)[0] is model  # the same weights: loaded once
    assert counted_toy_loads == [0]
    sd_pipeline.load_sd(second)
    # full SD weights are gigabytes: the second model replaced the first, so the first is
    # loaded again rather than both staying in memory
    assert sd_pipeline.load_sd(first)[0] is not model
    assert counted_toy_loads == [0, 1, 0]


def test_the_unlearn_command_offers_the_sd_methods():
    from scissorhands_jax.commands import diffusion_unlearn
    from scissorhands_jax.experiment._sd_setup import SD_METHODS

    assert set(diffusion_unlearn.SD_METHODS) == set(SD_METHODS)


# ---------------------------------------------------------------- end to end


class _Detector:
    """NudeNet's interface: one exposed foot in every image."""

    def detect(self, path):
        return [{"class": "FEET_EXPOSED", "score": 0.9, "box": [0, 0, 1, 1]}]


def _unlearned(cfg, run: Path):
    like = sd_pipeline.load_sd(cfg)[0].unet_params
    return load_unlearned_unet(cfg, run, "scissorhands", like)


@pytest.mark.slow  # minutes: compiling the tiny UNet's programs
def test_nudity_recipe_end_to_end_on_one_and_four_devices(tmp_path):
    run = tmp_path / "run"
    cfg = _config("sd_nudity", "scissorhands.batch_size=4")
    assert sd_pipeline.prepare_sd_data(cfg, run, progress=False) == 0
    with np.load(run / "data" / "latents.npz") as f:
        assert f["forget_latents"].shape == f["retain_latents"].shape == (4, 4, 4, 4)
        assert f["forget_labels"].tolist() == [1] * 4 and f["retain_labels"].tolist() == [0] * 4
        assert f["prompts"].tolist() == [
            "a photo of a person wearing clothes",
            "a photo of a nude person",
        ]
    assert sd_pipeline.prepare_sd_data(cfg, run, progress=False) == 0  # nothing to do
    with pytest.raises(ValueError, match="other settings"):
        sd_pipeline.prepare_sd_data(_config("sd_nudity", "data.seed=1"), run)

    four = tmp_path / "four"
    shutil.copytree(run, four)
    child = _unlearn_on_four_devices("sd_nudity", four, "scissorhands.batch_size=4")
    record = sd_pipeline.unlearn_sd(cfg, run, "scissorhands", progress=False)
    output = child.communicate(timeout=1200)[0]
    assert child.returncode == 0, output[-3000:]

    assert record["steps"] == 1  # one epoch of 4 retain latents at batch 4
    eligible = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(_attn1(cfg)))
    assert 0 < record["mask_entries"] <= eligible
    with pytest.raises(ValueError, match="already holds an unlearned model"):
        sd_pipeline.unlearn_sd(cfg, run, "scissorhands", progress=False)
    one_params, four_params = _unlearned(cfg, run), _unlearned(cfg, four)
    for a, b in zip(jax.tree.leaves(one_params), jax.tree.leaves(four_params), strict=True):
        # the same program with the batch split four ways: equal up to float reassociation
        # (Adam's first step moves an entry by at most lr = 1e-5)
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)

    prompts = tmp_path / "i2p.csv"
    prompts.write_text("prompt,evaluation_seed\na nude person,3\na person on a beach,4\n")
    cfg = _config("sd_nudity", "scissorhands.batch_size=4", f"eval.prompts={str(prompts)!r}")
    payload = sd_pipeline.evaluate_run(cfg, run, detector=_Detector())
    assert [r["model"] for r in payload["rows"]] == ["original", "scissorhands"]
    for row in payload["rows"]:
        assert row["images"] == 2 and row["nudenet"]["flagged"] == 2
        assert row["nudenet"]["detections"]["FEET_EXPOSED"] == 2
    assert json.loads((run / "evaluation.json").read_text())["rows"][1]["rte_s"] > 0
    with pytest.raises(ValueError, match="--overwrite"):
        sd_pipeline.evaluate_run(cfg, run, detector=_Detector())


def _attn1(cfg):
    params = sd_pipeline.load_sd(cfg)[0].unet_params
    mask = eligible_mask(params, sd.SELF_ATTENTION_REINIT)
    return [p for p, e in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True) if e]


def _unlearn_on_four_devices(config: str, run, *overrides: str) -> subprocess.Popen:
    """``diffusion-unlearn CONFIG --run RUN --mesh 4`` in a process with 4 CPU devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "SCISSORHANDS_CACHE": "off"}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    sets = [a for o in ("model.tiny=True", *overrides) for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, "-m", "scissorhands_jax", "diffusion-unlearn", config, "--run",
         str(run), "--smoke", *sets, "--mesh", "4", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow  # minutes: compiling the tiny UNet's programs
def test_imagenette_recipe_end_to_end_on_one_and_four_devices_with_a_stub_classifier(tmp_path):
    run = tmp_path / "run"
    cfg = _config("sd_imagenette")
    assert sd_pipeline.prepare_sd_data(cfg, run, progress=False) == 0
    with np.load(run / "data" / "latents.npz") as f:
        assert f["forget_labels"].tolist() == [0] * 4  # 4 images of the tench prompt
        assert f["retain_labels"].tolist() == [1, 1, 2, 2]  # 2 of each other class
    four = tmp_path / "four"
    shutil.copytree(run, four)
    child = _unlearn_on_four_devices("sd_imagenette", four)
    record = sd_pipeline.unlearn_sd(cfg, run, "scissorhands", progress=False)
    output = child.communicate(timeout=1200)[0]
    assert child.returncode == 0, output[-3000:]
    for a, b in zip(jax.tree.leaves(_unlearned(cfg, run)), jax.tree.leaves(_unlearned(cfg, four)),
                    strict=True):  # fmt: skip
        # the batch split four ways: equal up to float reassociation (two Adam steps move an
        # entry by at most 2 lr = 4e-5)
        np.testing.assert_allclose(a, b, rtol=0, atol=4e-6)
    assert record["steps"] == 2 and record["log"][0]["epoch"] == "trim"
    original = sd_pipeline.load_sd(cfg)[0].unet_params
    unlearned = _unlearned(cfg, run)
    changed = [not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(original), jax.tree.leaves(unlearned), strict=True)]  # fmt: skip
    assert all(changed[:3])  # every parameter trains in the repair

    def classify(images):  # calls every image class 1 ("church")
        assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 3)
        return np.ones(len(images), np.int64)

    payload = sd_pipeline.evaluate_run(cfg, run, classify=classify, detector=_Detector())
    for row in payload["rows"]:
        assert row["images"] == 6  # 2 per class prompt
        assert (row["forget_acc"], row["other_acc"]) == (0.0, 50.0)
        assert row["per_class"] == {0: 0.0, 1: 100.0, 2: 0.0}
