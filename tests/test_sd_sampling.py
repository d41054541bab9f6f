"""SD text-to-image sampling: the schedule, the DDIM step against diffusers, guidance by
hand, prompt files, and a tiny random pipeline on 1 and 4 devices.

The DDIM and PLMS comparisons run diffusers' ``DDIMScheduler`` and ``PNDMScheduler``
(``skip_prk_steps``, SD v1.4's) and our jitted loop on the same schedule configuration and
the same fake noise predictor (a fixed linear map of x and t, standing in for the UNet),
in float32, for 10 steps (and PLMS's one-step special case). Tolerance: 1e-5 of the
largest absolute value. Both compute the same float32 expressions in a different order
(observed ~2e-7); a wrong timestep, ᾱ or offset moves the result by 4e-3 or more. Skipped where
diffusers (and torch) are not installed.

The 4-device run is this file run as a script in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``, set before JAX starts.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")

from conftest import TINY_UNET  # noqa: E402

from scissorhands_jax import sd  # noqa: E402
from scissorhands_jax.diffusion.schedule import make_schedule  # noqa: E402

SD14_SCHEDULER = {  # CompVis/stable-diffusion-v1-4 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.7.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def test_scaled_linear_betas_are_linear_in_their_square_root():
    betas = np.asarray(
        make_schedule("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012).betas
    )
    assert betas[0] == pytest.approx(0.00085, rel=1e-6)
    assert betas[-1] == pytest.approx(0.012, rel=1e-6)
    step = (0.012**0.5 - 0.00085**0.5) / 999
    np.testing.assert_allclose(np.diff(np.sqrt(betas.astype(np.float64))), step, rtol=1e-4)


def test_ddim_steps_by_hand():
    # 1000 // 4 = 250: timesteps 751, 501, 251, 1; targets 501, 251, 1, -249 -> ᾱ_0
    plan = sd.ddim_steps(sd.SchedulerConfig(), 4)
    assert plan.timesteps.tolist() == [751, 501, 251, 1]
    abar = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    np.testing.assert_allclose(plan.alphas_cumprod, abar[[751, 501, 251, 1]], rtol=1e-6)
    np.testing.assert_allclose(plan.alphas_cumprod_prev, abar[[501, 251, 1, 0]], rtol=1e-6)
    ones = sd.ddim_steps(sd.SchedulerConfig(set_alpha_to_one=True), 4)
    assert float(ones.alphas_cumprod_prev[-1]) == 1.0
    with pytest.raises(ValueError, match="num_steps"):
        sd.ddim_steps(sd.SchedulerConfig(), 0)


def test_ddim_step_by_hand():
    # x_t = 2, eps = 0.5, ᾱ = 0.64, ᾱ' = 0.81: x0 = (2 - 0.6 * 0.5) / 0.8 = 2.125,
    # x' = 0.9 * 2.125 + sqrt(0.19) * 0.5
    out = sd.ddim_step(jnp.float32(2.0), jnp.float32(0.5), 0.64, 0.81)
    assert float(out) == pytest.approx(0.9 * 2.125 + 0.19**0.5 * 0.5, rel=1e-6)


def test_guided_eps_by_hand():
    eps_u, eps_c = jnp.array([1.0, -2.0]), jnp.array([3.0, 0.0])
    # ε_∅ + s (ε_c − ε_∅) with s = 7.5: 1 + 7.5·2 = 16, −2 + 7.5·2 = 13
    np.testing.assert_allclose(sd.classifier_free_guidance(eps_u, eps_c, 7.5), [16.0, 13.0])
    np.testing.assert_allclose(sd.classifier_free_guidance(eps_u, eps_c, 1.0), eps_c)


def fake_eps(x, t):
    """The fixed noise predictor both samplers see: a linear map of x and t."""
    return 0.3 * x + 1e-3 * t - 0.1


class FakeUNet:
    """Stands in for the UNet in :func:`denoise`: ``fake_eps``, whatever the context."""

    def apply(self, variables, x, t, context):
        del variables, context
        return fake_eps(x, t.astype(jnp.float32).reshape(-1, 1, 1, 1))


@pytest.mark.parametrize(
    ("sampler", "reference", "num_steps"),
    [("ddim", "DDIMScheduler", 10), ("plms", "PNDMScheduler", 10), ("plms", "PNDMScheduler", 1)],
)
def test_sampling_loop_equals_diffusers(sampler, reference, num_steps):
    pytest.importorskip("torch", reason="diffusers' schedulers need torch")
    diffusers = pytest.importorskip("diffusers", reason="the reference schedulers are diffusers'")
    import torch

    # from_config: the fields a scheduler does not have (e.g. DDIM's skip_prk_steps) ignored
    ref = getattr(diffusers, reference).from_config(SD14_SCHEDULER)
    ref.set_timesteps(num_steps)
    x0 = np.random.default_rng(0).normal(size=(2, 4, 4, 4)).astype(np.float32)
    x = torch.from_numpy(x0)
    for t in ref.timesteps:
        x = ref.step(fake_eps(x, float(t)), t, x).prev_sample
    ref_x = x.numpy()

    scheduler = sd.SchedulerConfig(num_train_timesteps=1000, steps_offset=1)
    plan = (sd.ddim_steps if sampler == "ddim" else sd.plms_steps)(scheduler, num_steps)
    np.testing.assert_array_equal(plan.timesteps, ref.timesteps.numpy())
    ctx = jnp.zeros((2, 3, 8))
    ours = sd._sampling.denoise(FakeUNet(), None, jnp.asarray(x0), ctx, ctx, plan, 1.0)
    err = np.abs(np.asarray(ours) - ref_x).max() / np.abs(ref_x).max()
    assert err <= 1e-5, f"max abs error {err:.2e} of the output scale"


def test_plms_plan_by_hand():
    # 4 steps, r = 250: evaluations at 751, 501 (the first step again), 501, 251, 1
    plan = sd.plms_steps(sd.SchedulerConfig(), 4)
    assert plan.timesteps.tolist() == [751, 501, 501, 251, 1]
    assert plan.from_first.tolist() == [False, True, False, False, False]
    assert plan.remember.tolist() == [True, False, True, True, True]
    np.testing.assert_allclose(plan.eps_weights[1], [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(plan.eps_weights[4], np.array([55, -59, 37, -9]) / 24, rtol=1e-6)
    abar = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    np.testing.assert_allclose(plan.alphas_cumprod, abar[[751, 751, 501, 251, 1]], rtol=1e-6)
    np.testing.assert_allclose(plan.alphas_cumprod_prev, abar[[501, 501, 251, 1, 0]], rtol=1e-6)


def test_scheduler_config_read_and_refused(tmp_path):
    assert sd.read_scheduler_config(tmp_path) == sd.SchedulerConfig()  # none: SD v1.4's
    (tmp_path / "scheduler").mkdir()
    path = tmp_path / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**SD14_SCHEDULER, "num_train_timesteps": 500}))
    config = sd.read_scheduler_config(tmp_path)
    assert config.num_train_timesteps == 500 and config.steps_offset == 1
    assert not config.set_alpha_to_one
    path.write_text(json.dumps({**SD14_SCHEDULER, "prediction_type": "v_prediction"}))
    with pytest.raises(ValueError, match="prediction_type"):
        sd.read_scheduler_config(tmp_path)
    path.write_text(json.dumps({**SD14_SCHEDULER, "trained_betas": [0.1, 0.2]}))
    with pytest.raises(ValueError, match="trained_betas"):
        sd.read_scheduler_config(tmp_path)
    path.write_text(json.dumps({**SD14_SCHEDULER, "_class_name": "EulerDiscreteScheduler"}))
    with pytest.raises(ValueError, match="EulerDiscreteScheduler"):
        sd.read_scheduler_config(tmp_path)


def test_read_prompts_text_and_csv(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("a cat\n\n  a dog  \n")
    assert sd.read_prompts(text) == [sd.Prompt("a cat", None), sd.Prompt("a dog", None)]
    table = tmp_path / "i2p.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "categories", "evaluation_seed"])
        w.writerows([["a, b", "x", "42"], ["c", "y", ""]])
    assert sd.read_prompts(table) == [sd.Prompt("a, b", 42), sd.Prompt("c", None)]
    table.write_text("text\nhello\n")
    with pytest.raises(ValueError, match="'prompt' column"):
        sd.read_prompts(table)
    table.write_text("prompt,seed\nhello,abc\n")
    with pytest.raises(ValueError, match="line 2"):
        sd.read_prompts(table)
    with pytest.raises(ValueError, match="does not exist"):
        sd.read_prompts(tmp_path / "missing.txt")


# ------------------------------------------------------------ a tiny random pipeline

UNET = TINY_UNET
VAE = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    norm_num_groups=8,
)
TEXT = dict(
    vocab_size=600,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
)
SIZE = 16  # pixels; latents 8x8


def tiny_sd() -> sd.StableDiffusion:
    """UNet, autoencoder and CLIP with tiny configurations and random parameters, and a
    byte-level tokenizer (no merges)."""
    keys = jax.random.split(jax.random.key(0), 3)
    unet = sd.UNet(sd.UNetConfig(**UNET))
    vae = sd.AutoencoderKL(sd.VAEConfig(**VAE))
    text = sd.CLIPTextEncoder(sd.TextConfig(**TEXT))
    up = unet.init(keys[0], jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 77, 32)))
    vp = vae.init(keys[1], jnp.zeros((1, SIZE, SIZE, 3)))
    tp = text.init(keys[2], jnp.zeros((1, 77), jnp.int32))
    symbols = list(sd._tokenizer.bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    tokenizer = sd.CLIPTokenizer(vocab, [])
    return sd.StableDiffusion(unet, up["params"], vae, vp["params"], text, tp["params"], tokenizer)


def generate(out_dir: str, prompts: str, devices: int) -> None:
    """The evaluation set of the tiny pipeline, data-parallel over ``devices`` devices."""
    assert jax.device_count() >= devices
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:devices]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    sd.generate_eval_set(
        tiny_sd(),
        prompts,
        out_dir,
        images_per_prompt=1,
        seed=3,
        num_steps=3,
        height=SIZE,
        width=SIZE,
        sharding=None if devices == 1 else sharding,
    )


def read_images(folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
def test_tiny_pipeline_one_and_four_devices_agree(tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\na red car\n")
    one, four = tmp_path / "one", tmp_path / "four"
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.Popen(
        [sys.executable, __file__, str(four), str(prompts), "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    generate(str(one), str(prompts), 1)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]

    a, b = read_images(one), read_images(four)
    assert sorted(a) == sorted(b) == ["00000_00.png", "00001_00.png"]
    for name in a:
        assert a[name].shape == (SIZE, SIZE, 3) and a[name].dtype == np.uint8
        # the same program on a quarter of the batch: equal up to a rounding step
        assert np.abs(a[name].astype(int) - b[name].astype(int)).max() <= 1
    assert not np.array_equal(a["00000_00.png"], a["00001_00.png"])  # prompts matter
    with (one / "index.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["prompt"], r["seed"]) for r in rows] == [
        ("00000_00.png", "a photo of a cat", "3"),
        ("00001_00.png", "a red car", "3"),
    ]

    # resumable: the images on disk are not drawn again; a deleted one is, identically
    calls = []
    real = sd._evalset.text_to_image
    monkeypatch.setattr(
        sd._evalset, "text_to_image", lambda *a, **k: calls.append(a[1]) or real(*a, **k)
    )
    (one / "00001_00.png").unlink()
    generate(str(one), str(prompts), 1)
    assert calls == [["a red car"]]
    np.testing.assert_array_equal(read_images(one)["00001_00.png"], a["00001_00.png"])


def test_eval_set_refuses_bad_settings_before_writing(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    with pytest.raises(ValueError, match="images_per_prompt"):
        sd.generate_eval_set(None, prompts, tmp_path / "out", images_per_prompt=0)
    m = tiny_sd()
    with pytest.raises(ValueError, match="height must be a positive multiple of 2"):
        sd.generate_eval_set(m, prompts, tmp_path / "out", height=15, width=16)
    with pytest.raises(ValueError, match="num_steps"):
        sd.generate_eval_set(m, prompts, tmp_path / "out", num_steps=0, height=16, width=16)
    assert not (tmp_path / "out").exists()


if __name__ == "__main__":
    generate(sys.argv[1], sys.argv[2], int(sys.argv[3]))
