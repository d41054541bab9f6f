"""The release's SD losses against their formulas evaluated with separate UNet calls.

A tiny random UNet; x_t is built by hand from the closed-form schedule (NumPy, float64
ᾱ), each ε prediction is a separate ``unet.apply`` call, and the squared norm is the
mean over elements. Tolerance 1e-5 relative (the same float32 network, the batch split
or joined). The stop-gradient of the anchor loss is checked on the gradient with respect
to the parameters: equal to that of the first branch against a constant target, and
different from the gradient without the stop-gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")

from conftest import TINY_UNET  # noqa: E402

from scissorhands_jax import sd  # noqa: E402

UNET = TINY_UNET
VAE = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    norm_num_groups=8,
)
RTOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    k = jax.random.split(jax.random.key(0), 8)
    unet = sd.UNet(sd.UNetConfig(**UNET))
    params = unet.init(k[0], jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 5, 32)))
    # move every parameter off its initial value (zero-initialised outputs would hide terms)
    leaves, tree = jax.tree.flatten(params["params"])
    keys = jax.random.split(k[1], len(leaves))
    params = jax.tree.unflatten(
        tree,
        [x + 0.05 * jax.random.normal(kk, x.shape) for x, kk in zip(leaves, keys, strict=True)],
    )
    schedule = sd.SchedulerConfig().schedule()
    latents = jax.random.normal(k[2], (2, 8, 8, 4))
    ctx = [jax.random.normal(kk, (2, 5, 32)) for kk in k[3:6]]
    t, noise = jnp.array([10, 700]), jax.random.normal(k[6], (2, 8, 8, 4))
    return unet, params, schedule, latents, ctx, t, noise


def abar_by_hand(t):
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    return np.cumprod(1.0 - betas)[np.asarray(t)][:, None, None, None]


def eps_by_hand(unet, params, latents, t, noise, context):
    a = abar_by_hand(t)
    x_t = jnp.asarray(np.sqrt(a) * latents + np.sqrt(1.0 - a) * noise, jnp.float32)
    return unet.apply({"params": params}, x_t, t, context)


def mse(a, b):
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def test_ldm_loss_by_hand(setup):
    unet, params, schedule, x0, (c, _, _), t, noise = setup
    got = sd.ldm_loss(unet, params, schedule, x0, c, t, noise)
    want = mse(noise, eps_by_hand(unet, params, x0, t, noise, c))
    assert float(got) == pytest.approx(want, rel=RTOL)


def test_anchor_and_nudity_repair_loss_by_hand(setup):
    unet, params, schedule, x0, (c_nude, c_clothed, c_retain), t, noise = setup
    e_nude = eps_by_hand(unet, params, x0, t, noise, c_nude)
    e_clothed = eps_by_hand(unet, params, x0, t, noise, c_clothed)
    anchor = sd.anchor_loss(unet, params, schedule, x0, c_nude, c_clothed, t, noise)
    assert float(anchor) == pytest.approx(mse(e_nude, e_clothed), rel=RTOL)

    retain = (jnp.flip(x0, 0), c_retain, t[::-1], -noise)
    l_retain = mse(-noise, eps_by_hand(unet, params, *retain[:1], t[::-1], -noise, c_retain))
    got = sd.nudity_repair_loss(unet, params, schedule, retain, (x0, c_nude, c_clothed, t, noise))
    assert sd.REPAIR_WEIGHT == 0.1
    assert float(got) == pytest.approx(l_retain + 0.1 * mse(e_nude, e_clothed), rel=RTOL)


@pytest.mark.slow
def test_anchor_loss_trains_only_the_first_branch(setup):
    unet, params, schedule, x0, (c_nude, c_clothed, _), t, noise = setup
    target = eps_by_hand(unet, params, x0, t, noise, c_clothed)  # a constant

    def first_branch(p):
        return jnp.mean((eps_by_hand(unet, p, x0, t, noise, c_nude) - target) ** 2)

    def both_branches(p):
        e1 = eps_by_hand(unet, p, x0, t, noise, c_nude)
        return jnp.mean((e1 - eps_by_hand(unet, p, x0, t, noise, c_clothed)) ** 2)

    got = jax.grad(sd.anchor_loss, argnums=1)(
        unet, params, schedule, x0, c_nude, c_clothed, t, noise
    )
    want, without_sg = jax.grad(first_branch)(params), jax.grad(both_branches)(params)
    flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])  # noqa: E731
    got, want, without_sg = flat(got), flat(want), flat(without_sg)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale
    assert np.abs(without_sg - want).max() > 0.1 * scale  # the check can fail


def test_class_saliency_loss_folds_guidance_in(setup):
    unet, params, schedule, x0, (c, uncond, _), t, noise = setup
    e_c = eps_by_hand(unet, params, x0, t, noise, c)
    e_u = eps_by_hand(unet, params, x0, t, noise, uncond)
    want = mse(noise, 8.5 * np.asarray(e_c) - 7.5 * np.asarray(e_u))
    got = sd.class_saliency_loss(unet, params, schedule, x0, c, uncond, t, noise)
    assert float(got) == pytest.approx(want, rel=RTOL)


def test_class_repair_loss_by_hand(setup):
    unet, params, schedule, x0, (c_r, c_f, _), t, noise = setup
    retain, forget = (x0, c_r, t, noise), (-x0, c_f, t[::-1], noise)
    l_r = mse(noise, eps_by_hand(unet, params, x0, t, noise, c_r))
    l_f = mse(noise, eps_by_hand(unet, params, -x0, t[::-1], noise, c_f))
    got = sd.class_repair_loss(unet, params, schedule, retain, forget)
    assert float(got) == pytest.approx(l_r - 0.1 * l_f, rel=RTOL)


def test_encode_latents_scales_the_mean_or_a_sample():
    vae = sd.AutoencoderKL(sd.VAEConfig(**VAE))
    images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1.0, maxval=1.0)
    params = vae.init(jax.random.key(2), images)["params"]
    mean, logvar = vae.apply({"params": params}, images, method="encode")
    got = sd.encode_latents(vae, params, images)
    np.testing.assert_allclose(got, 0.18215 * np.asarray(mean), rtol=1e-6)
    key = jax.random.key(3)
    sampled = sd.encode_latents(vae, params, images, key)
    z = np.asarray(mean) + np.exp(0.5 * np.asarray(logvar)) * np.asarray(
        jax.random.normal(key, mean.shape)
    )
    np.testing.assert_allclose(sampled, 0.18215 * z, rtol=1e-5, atol=1e-6)


def test_draw_noise_shapes_and_range():
    t, noise = sd.draw_noise(jax.random.key(0), jnp.zeros((64, 2, 2, 4)))
    assert t.shape == (64,) and noise.shape == (64, 2, 2, 4)
    assert 0 <= int(t.min()) and int(t.max()) < 1000
