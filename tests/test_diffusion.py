"""Diffusion: schedule and posterior, samplers, the UNet, Scissorhands for generation,
baselines, metrics, checkpoints and the generate-demo command (the config-driven
diffusion-train/-unlearn/-evaluate pipeline: tests/test_diffusion_pipeline.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import scissorhands_jax as shs
from scissorhands_jax import cli
from scissorhands_jax import diffusion as dm
from scissorhands_jax._reinit import leaf_paths

# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_against_closed_forms(kind):
    T = 50
    s = dm.make_schedule(kind, T)
    betas = np.linspace(1e-4, 0.02, T) if kind == "linear" else None
    if kind == "cosine":  # alpha_bar(t) = f(t + 1) / f(0) wherever beta is not clipped
        f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        want = np.array([f(t + 1) / f(0) for t in range(T - 1)])
        np.testing.assert_allclose(s.alphas_cumprod[:-1], want, rtol=1e-5)
        betas = np.array([min(1 - f(t + 1) / f(t), 0.999) for t in range(T)])
        assert betas[-1] == 0.999  # the last step is clipped
    np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
    abar = np.cumprod(1 - betas)
    np.testing.assert_allclose(s.alphas_cumprod, abar, rtol=1e-5)
    np.testing.assert_allclose(s.alphas_cumprod_prev, np.r_[1.0, abar[:-1]], rtol=1e-5)


def test_q_sample_and_posterior_against_bayes():
    s = dm.make_schedule("linear", 20, beta_start=1e-3, beta_end=0.2)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((5, 4, 4, 1)).astype(np.float32)
    xt = rng.standard_normal((5, 4, 4, 1)).astype(np.float32)
    noise = rng.standard_normal((5, 4, 4, 1)).astype(np.float32)
    t = np.array([1, 3, 7, 12, 19])
    b = np.linspace(1e-3, 0.2, 20)
    abar = np.cumprod(1 - b)
    col = lambda v: v[t][:, None, None, None]  # noqa: E731
    np.testing.assert_allclose(
        dm.q_sample(s, x0, t, noise),
        np.sqrt(col(abar)) * x0 + np.sqrt(1 - col(abar)) * noise,
        rtol=1e-5,
        atol=1e-6,
    )
    # q(x_{t-1} | x_t, x_0) ∝ N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}) ·
    #                         N(x_t; sqrt(alpha_t) x_{t-1}, beta_t): product of Gaussians
    abar_prev, alpha = col(np.r_[1.0, abar[:-1]]), col(1 - b)
    precision = 1 / (1 - abar_prev) + alpha / col(b)
    var = 1 / precision
    mean = var * (np.sqrt(abar_prev) * x0 / (1 - abar_prev) + np.sqrt(alpha) * xt / col(b))
    got_mean, got_var, got_logvar = dm.q_posterior(s, x0, xt, t)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.broadcast_to(got_var, var.shape), var, rtol=1e-4)
    np.testing.assert_allclose(got_logvar, np.log(var), rtol=1e-4, atol=1e-5)
    eps_back = dm.predict_x0(s, dm.q_sample(s, x0, t, noise), t, noise)
    np.testing.assert_allclose(eps_back, x0, rtol=1e-4, atol=1e-4)


def test_schedule_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        dm.make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="num_timesteps"):
        dm.make_schedule("linear", 1)
    with pytest.raises(ValueError, match="every beta"):
        dm.make_schedule("linear", 10, beta_end=1.5)


# ---------------------------------------------------------------- samplers


def _toy_eps(params, x, t, labels, train=False, rng=None):
    del train, rng
    return params["a"] * x + 0.01 * labels[:, None, None, None] + 1e-3 * t[:, None, None, None]


def test_guided_eps_formula():
    x = jnp.ones((2, 2, 2, 1))
    t = jnp.array([3, 4])
    y = jnp.array([1, 2])
    params = {"a": jnp.float32(0.5)}
    cond = _toy_eps(params, x, t, y)
    uncond = _toy_eps(params, x, t, jnp.full_like(y, 9))
    got = dm.guided_eps(_toy_eps, params, x, t, y, 3.0, 9)
    np.testing.assert_allclose(got, uncond + 3.0 * (cond - uncond), rtol=1e-6)
    np.testing.assert_allclose(dm.guided_eps(_toy_eps, params, x, t, y, None, 9), cond)


@pytest.mark.parametrize("variant", ["plain", "guided", "anchor", "label_dropout"])
def test_epsilon_loss_against_numpy(variant):
    """The loss reads t, the noise and the label dropout from the per-example keys
    (split into 4: t, noise, dropout, network rng), as documented; the anchor variant is
    the other function, :func:`anchor_loss`."""
    s = dm.make_schedule("linear", 30, beta_start=1e-3, beta_end=0.2)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(-1, 1, (6, 2, 2, 1)).astype(np.float32),
        "label": np.array([0, 1, 2, 0, 1, 2], np.int32),
        "noise_key": rng.integers(0, 2**32, (6, 2), dtype=np.uint32),
    }
    p_uncond = 0.5 if variant == "label_dropout" else 0.0
    guidance = 2.5 if variant == "guided" else None
    anchors = np.array([1, 1, 1, 2, 2, 2], np.int32)
    params = {"a": jnp.float32(0.7)}
    if variant == "anchor":
        with pytest.raises(KeyError, match="NoisedSource"):  # the anchors are data
            dm.anchor_loss(_toy_eps, params, s, batch, null_class=3)
        batch["anchor"] = anchors
    else:  # an "anchor" entry does not change the epsilon loss: the function decides
        batch["anchor"] = anchors
    if variant == "anchor":
        got = dm.anchor_loss(_toy_eps, params, s, batch, null_class=3, p_uncond=p_uncond)
    else:
        got = dm.epsilon_loss(_toy_eps, params, s, batch, null_class=3, p_uncond=p_uncond,
                              guidance=guidance)  # fmt: skip
    abar = np.cumprod(1 - np.linspace(1e-3, 0.2, 30))
    total, dropped, grad_a = 0.0, 0, 0.0
    for i in range(6):
        k = jax.random.wrap_key_data(batch["noise_key"][i], impl="threefry2x32")
        k_t, k_n, k_d, _ = jax.random.split(k, 4)
        t = int(jax.random.randint(k_t, (), 0, 30))
        noise = np.asarray(jax.random.normal(k_n, (2, 2, 1)), np.float64)
        y = batch["label"][i]
        if p_uncond and bool(jax.random.bernoulli(k_d, p_uncond)):
            y, dropped = 3, dropped + 1
        x_t = np.sqrt(abar[t]) * batch["image"][i] + np.sqrt(1 - abar[t]) * noise
        eps = lambda c: 0.7 * x_t + 0.01 * c + 1e-3 * t  # noqa: E731, B023
        pred = eps(3) + 2.5 * (eps(y) - eps(3)) if variant == "guided" else eps(y)
        target = eps(batch["anchor"][i]) if variant == "anchor" else noise
        total += np.mean((pred - target) ** 2)
        grad_a += np.mean(2 * (pred - target) * x_t)  # d/da with the target held fixed
    assert float(got) == pytest.approx(total / 6, rel=1e-5)
    if variant == "label_dropout":
        assert 0 < dropped < 6  # the draw happened (and this test can see it)
    if variant == "anchor":  # the anchor prediction is a stop-gradient target (without it,
        # a would cancel from pred - target and the gradient would be 0)
        g = jax.grad(lambda p: dm.anchor_loss(_toy_eps, p, s, batch, null_class=3))(params)
        assert float(g["a"]) == pytest.approx(grad_a / 6, rel=1e-4)
        assert abs(grad_a) > 1e-4


def _numpy_sampler(method, s, key, labels, shape, scale, null, a, steps=None, eta=0.0):
    """Reference loops written from DDPM Algorithm 2 / Eq. 7 and DDIM Eq. 12 (float64),
    reading the noise from the documented key derivation."""
    k_init, k_steps = jax.random.split(key)
    x = np.asarray(jax.random.normal(k_init, (len(labels), *shape)), np.float64)
    b = np.asarray(s.betas, np.float64)
    abar = np.cumprod(1 - b)
    lab = np.asarray(labels)[:, None, None, None]

    def eps(x, t):
        e = lambda y: a * x + 0.01 * y + 1e-3 * t  # noqa: E731
        return e(null) + scale * (e(lab) - e(null))

    if method == "ddpm":
        for t in reversed(range(len(b))):
            ab_prev = abar[t - 1] if t > 0 else 1.0
            x0 = np.clip((x - np.sqrt(1 - abar[t]) * eps(x, t)) / np.sqrt(abar[t]), -1, 1)
            mean = (np.sqrt(ab_prev) * b[t] * x0 + np.sqrt(1 - b[t]) * (1 - ab_prev) * x) / (
                1 - abar[t]
            )
            var = b[t] * (1 - ab_prev) / (1 - abar[t]) if t > 0 else 0.0
            z = np.asarray(jax.random.normal(jax.random.fold_in(k_steps, t), x.shape))
            x = mean + np.sqrt(var) * z
        return np.clip(x, -1, 1)
    seq = list(range(0, len(b), len(b) // steps))[:steps]
    for j in reversed(range(len(seq))):
        t = seq[j]
        ab_prev = abar[seq[j - 1]] if j > 0 else 1.0
        e = eps(x, t)
        x0 = (x - np.sqrt(1 - abar[t]) * e) / np.sqrt(abar[t])
        sigma = eta * np.sqrt((1 - ab_prev) / (1 - abar[t]) * (1 - abar[t] / ab_prev))
        z = np.asarray(jax.random.normal(jax.random.fold_in(k_steps, t), x.shape))
        x = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev - sigma**2) * e + sigma * z
    return np.clip(x, -1, 1)


@pytest.mark.parametrize("method,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_samplers_against_numpy_reference(method, eta):
    s = dm.make_schedule("linear", 12, beta_start=1e-3, beta_end=0.2)
    labels = jnp.array([0, 1, 2, 1])
    key = jax.random.key(7)
    params = {"a": jnp.float32(0.3)}
    common = dict(schedule=s, image_shape=(2, 2, 1), null_class=3, guidance_scale=1.5)
    got = dm.sample(
        _toy_eps, params, key, labels, method=method, num_steps=4, eta=eta, clip=False, **common
    )
    if method == "ddpm":  # DDPM's x0 clipping is part of the reference: compare with it
        got = dm.sample(_toy_eps, params, key, labels, method="ddpm", **common)
    want = _numpy_sampler(method, s, key, labels, (2, 2, 1), 1.5, 3, 0.3, steps=4, eta=eta)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_ddim_timesteps():
    np.testing.assert_array_equal(dm.ddim_timesteps(1000, 4), [0, 250, 500, 750])
    with pytest.raises(ValueError):
        dm.ddim_timesteps(10, 11)


# ---------------------------------------------------------------- the UNet


def _tiny_unet(num_classes=3):
    """One resolution level: compiles in seconds and still learns the toy classes."""
    return dm.UNet(
        num_classes=num_classes, ch=16, ch_mult=(1,), attn_resolutions=(8,), num_res_blocks=0
    )


@pytest.mark.parametrize(
    "size,ch_mult,attn",
    [(8, (1, 2), (4,)), (16, (1, 2, 2), (4,)), (32, (1, 2, 2, 2), (16,))],
    ids=["digits8", "digits16", "cifar32"],
)
def test_unet_shapes_at_every_resolution(size, ch_mult, attn):
    unet = dm.UNet(num_classes=10, ch=8, ch_mult=ch_mult, attn_resolutions=attn)
    x = jnp.zeros((2, size, size, 3 if size == 32 else 1))
    t, y = jnp.array([0, 5]), jnp.array([3, 10])  # 10 = the null class

    def run():
        variables = unet.init(jax.random.key(0), x, t, y)
        return unet.apply(variables, x, t, y), variables["params"]

    out, params = jax.eval_shape(run)  # traced, not compiled: shapes at no cost
    assert out.shape == x.shape and out.dtype == jnp.float32
    paths = leaf_paths(params)
    assert any("up_" in p and "/attn_" in p for p in paths)
    assert params["class_embed"]["embedding"].shape[0] == 11


def test_unet_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible"):
        dm.UNet(ch_mult=(1, 2, 2)).init(
            jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jnp.zeros(1), jnp.zeros(1)
        )


# ---------------------------------------------------------------- a trained tiny DDPM


def _toy_data(n_per_class=48, seed=0):
    """Three classes of 8x8 images: top half, left half, centre square bright."""
    base = -np.ones((3, 8, 8, 1), np.float32)
    base[0, :4] = 1
    base[1, :, :4] = 1
    base[2, 2:6, 2:6] = 1
    y = np.repeat(np.arange(3), n_per_class).astype(np.int32)
    noise = 0.1 * np.random.default_rng(seed).standard_normal((y.size, 8, 8, 1))
    return {"image": np.clip(base[y] + noise, -1, 1).astype(np.float32), "label": y}


FORGET = 2  # the centre square


@pytest.fixture(scope="module")
def toy():
    data = _toy_data()
    sched = dm.make_schedule("linear", 50, beta_start=2e-3, beta_end=0.4)
    model = dm.diffusion_model(
        _tiny_unet(), image_shape=(8, 8, 1), num_classes=3, schedule=sched, p_uncond=0.1
    )
    params, log = dm.train_diffusion(
        model,
        model.init(jax.random.key(0))[0],
        dm.diffusion_source(data, 32),
        key=jax.random.key(1),
        steps=300,
        lr=3e-3,
    )
    # the judge, "trained" on the same data: nearest class mean
    means = np.stack([data["image"][data["label"] == c].mean(0) for c in range(3)])
    retain = {k: v[data["label"] != FORGET] for k, v in data.items()}
    forget = {k: v[data["label"] == FORGET] for k, v in data.items()}
    return model, params, log, means, retain, forget


def _share(model, params, means, forget_class=FORGET):
    labels = jnp.repeat(jnp.arange(3), 20)
    x = np.asarray(
        dm.sample(model, params, jax.random.key(2), labels, num_steps=10, guidance_scale=2.0)
    )
    dist = ((x[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    probs = np.eye(3)[dist.argmin(1)]
    return dm.generation_metrics(probs, np.asarray(labels), forget_class)


@pytest.mark.slow
def test_training_lowers_the_loss_and_sampling_is_deterministic(toy):
    model, params, log, *_ = toy
    assert log[-1]["loss_retain"] < 0.5 * log[0]["loss_retain"]
    labels = jnp.array([0, 1, 2, 2])
    a = dm.sample(model, params, jax.random.key(3), labels, num_steps=5)
    b = dm.sample(model, params, jax.random.key(3), labels, num_steps=5)
    c = dm.sample(model, params, jax.random.key(4), labels, num_steps=5)
    assert a.shape == (4, 8, 8, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    chunked = dm.sample(model, params, jax.random.key(3), labels, num_steps=5, batch_size=2)
    assert chunked.shape == a.shape


@pytest.mark.slow
def test_trim_touches_only_the_selected_blocks(toy):
    model, params, _, _, retain, forget = toy
    res = dm.scissorhands_diffusion(
        model, params, retain=retain, forget=forget, key=jax.random.key(5), eligible="up_attn",
        trim=shs.TrimSettings(sparsity=0.9), repair=shs.AdamRepairSettings(steps=0, batch_size=32),
        objective=dm.DiffusionObjective(saliency_guidance=2.0),
    )  # fmt: skip
    assert res.log[0]["reinitialised"] > 0
    for path, old, new, m in zip(
        leaf_paths(params),
        jax.tree.leaves(params),
        jax.tree.leaves(res.params),
        jax.tree.leaves(res.mask),
        strict=True,
    ):
        in_block = path.startswith("up_") and "/attn_" in path and "/norm/" not in path
        if not in_block:
            assert not np.any(m), path
            np.testing.assert_array_equal(old, new, err_msg=path)
        else:  # exactly the masked entries changed (biases to 0)
            np.testing.assert_array_equal(
                np.asarray(old)[~np.asarray(m)], np.asarray(new)[~np.asarray(m)]
            )
            if path.endswith("bias"):
                assert np.all(np.asarray(new)[np.asarray(m)] == 0)


@pytest.mark.slow
def test_anchor_repair_lowers_the_forget_share(toy):
    model, params, _, means, retain, forget = toy
    before = _share(model, params, means)
    res = dm.scissorhands_diffusion(
        model, params, retain=retain, forget=forget, key=jax.random.key(3),
        trim=shs.TrimSettings(sparsity=0.9, reinit="model"),
        repair=shs.AdamRepairSettings(lam=1.0, lr=1e-3, steps=50, batch_size=32),
        objective=dm.DiffusionObjective("anchor", anchor=0, saliency_guidance=2.0),
    )  # fmt: skip
    after = _share(model, params=res.params, means=means)
    assert before["forget_share"] >= 70.0
    assert after["forget_share"] <= before["forget_share"] - 50.0
    assert after["other_acc"] >= before["other_acc"] - 20.0


@pytest.fixture(scope="module")
def contrast_gem(toy):
    """Scissorhands' class recipe L_r - lam * L_f under the GEM projection."""
    model, params, _, _, retain, forget = toy
    return dm.scissorhands_diffusion(
        model, params, retain=retain, forget=forget, key=jax.random.key(3),
        trim=shs.TrimSettings(sparsity=0.9, reinit="model"),
        projection=shs.ProjectionSettings(projection="gem"),
        repair=shs.AdamRepairSettings(lam=0.5, lr=1e-3, steps=20, batch_size=32, memory_every=10),
        objective=dm.DiffusionObjective("contrast", saliency_guidance=None),
    )  # fmt: skip


@pytest.mark.slow
def test_contrast_repair_raises_the_forget_loss(toy, contrast_gem):
    model, params, _, _, _, forget = toy
    batch = next(iter(dm.diffusion_source(forget, 48)(jax.random.key(9))))
    loss_f = jax.jit(lambda p: model.loss(p, {}, batch, False)[0])
    assert float(loss_f(contrast_gem.params)) > 2 * float(loss_f(params))
    assert contrast_gem.log[-1]["step"] == 20


@pytest.mark.slow
def test_unlearned_checkpoint_keeps_the_format(toy, contrast_gem, tmp_path):
    params, new = toy[1], contrast_gem.params
    assert jax.tree.structure(new) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    with shs.Checkpoints(tmp_path / "unlearned", identity={"model": "toy"}) as ck:
        ck.save(1, {"params": new})
    with shs.Checkpoints(tmp_path / "unlearned", identity={"model": "toy"}) as ck:
        back, _ = ck.restore({"params": params})  # the original as template
    jax.tree.map(np.testing.assert_array_equal, back["params"], new)
    with pytest.raises(shs.CheckpointError, match="different run"):
        with shs.Checkpoints(tmp_path / "unlearned", identity={"model": "other"}) as ck:
            ck.restore({"params": params})


@pytest.mark.slow
def test_baselines_run_and_salun_masks_half(toy):
    model, params, _, _, retain, forget = toy
    ft = dm.finetune_diffusion(
        model, params, retain=retain, key=jax.random.key(0), steps=2, batch_size=32
    )
    assert len(ft.log) == 1 and np.isfinite(ft.log[0]["loss_retain"]) and ft.mask is None
    rt = dm.retrain_diffusion(model, retain=retain, key=jax.random.key(0), steps=2, batch_size=32)
    assert jax.tree.structure(rt.params) == jax.tree.structure(params)
    res = dm.salun_diffusion(
        model, params, retain=retain, forget=forget, key=jax.random.key(0), steps=2, batch_size=32
    )
    assert res.log[0]["epoch"] == "mask"
    n = sum(x.size for x in jax.tree.leaves(params))
    assert res.log[0]["selected"] == pytest.approx(n / 2, abs=2)
    for old, new, m in zip(
        jax.tree.leaves(params), jax.tree.leaves(res.params), jax.tree.leaves(res.mask), strict=True
    ):
        np.testing.assert_array_equal(
            np.asarray(old)[~np.asarray(m)], np.asarray(new)[~np.asarray(m)]
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(dm.DIFFUSION_METHODS))
def test_every_method_keeps_the_tree_and_shares_the_record(toy, name):
    """The registry's methods take one interface and return the classifiers' record, with
    the tree's structure, shapes and dtypes kept, finite values, the shared log schema."""
    model, params, _, _, retain, forget = toy
    hp = {"steps": 2, "batch_size": 16}
    if name.startswith("scissorhands"):
        hp["sparsity"] = 0.9
    res = dm.DIFFUSION_METHODS[name](
        model, params, retain=retain, forget=forget, key=jax.random.key(0), progress=False, **hp
    )
    assert isinstance(res, shs.baselines.UnlearnResult) and res.model_state == {}
    assert jax.tree.structure(res.params) == jax.tree.structure(params)
    for old, new in zip(jax.tree.leaves(params), jax.tree.leaves(res.params), strict=True):
        assert old.shape == new.shape and old.dtype == new.dtype
        assert np.all(np.isfinite(np.asarray(new)))
    phases = [e["epoch"] for e in res.log if "epoch" in e]
    assert phases == ({"finetune": []}.get(name, ["mask" if name == "salun" else "trim"]))
    assert res.log[-1]["step"] == 2 and np.isfinite(res.log[-1]["loss_retain"])
    assert (res.mask is None) == (name == "finetune")
    if res.mask is not None:
        assert jax.tree.structure(res.mask) == jax.tree.structure(params)
    with pytest.raises(ValueError, match="no_such_setting"):
        dm.DIFFUSION_METHODS[name](model, params, retain=retain, forget=forget,
                                   key=jax.random.key(0), no_such_setting=1)  # fmt: skip


@pytest.mark.slow
def test_unlearning_rejects_bad_settings(toy):
    model, params, _, _, retain, forget = toy
    common = dict(retain=retain, forget=forget, key=jax.random.key(0))
    with pytest.raises(ValueError, match="needs an anchor"):
        dm.DiffusionObjective("anchor")
    with pytest.raises(ValueError, match="objective"):
        dm.DiffusionObjective("ascent")
    with pytest.raises(TypeError, match="trim must be a TrimSettings"):
        dm.scissorhands_diffusion(model, params, trim={"sparsity": 0.9}, **common)
    with pytest.raises(TypeError, match="repair must be a AdamRepairSettings"):
        dm.scissorhands_diffusion(model, params, repair=shs.RepairSettings(), **common)
    with pytest.raises(ValueError, match="project_every"):
        shs.ProjectionSettings(project_every=0)
    with pytest.raises(ValueError, match="projection.project_every"):
        dm.scissorhands_diffusion(
            model, params, projection=shs.ProjectionSettings(project_every=2), **common
        )
    with pytest.raises(ValueError, match="no parameter is eligible"):
        dm.scissorhands_diffusion(model, params, eligible="nothing_here", **common)
    with pytest.raises(ValueError, match="NoisedSource"):
        dm.scissorhands_diffusion(
            model, params, retain=lambda k: iter([]), forget=forget, key=jax.random.key(0)
        )


# ---------------------------------------------------------------- metrics


def _scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_against_scipy():
    rng = np.random.default_rng(0)
    for d in (1, 3, 6):
        a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
        s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        assert dm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
            _scipy_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8
        )
        assert dm.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    fa, fb = rng.standard_normal((200, 4)), 0.5 + 2 * rng.standard_normal((300, 4))
    want = _scipy_frechet(
        fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False)
    )
    assert dm.frechet_distance_features(fa, fb) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError):
        dm.frechet_distance(mu1, s1, mu2[:-1], s2)


def test_generation_metrics_by_hand():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = np.array([0, 0, 2, 1])
    got = dm.generation_metrics(probs, labels, 0)
    assert got["forget_share"] == 50.0
    assert got["forget_prob"] == pytest.approx(0.55)
    ent = lambda p: -sum(x * math.log(x) for x in p if x > 0)  # noqa: E731
    assert got["forget_entropy"] == pytest.approx((ent([0.9, 0.1]) + ent([0.2, 0.8])) / 2)
    assert got["other_acc"] == 50.0
    with pytest.raises(ValueError):
        dm.generation_metrics(probs[:2], labels[:2], 0)


def test_feature_extractor_gives_penultimate_features():
    module = shs.DigitsCNN()
    x = jnp.asarray(np.random.default_rng(0).random((5, 8, 8, 1)), jnp.float32)
    variables = module.init(jax.random.key(0), x)
    feats = dm.feature_extractor(module, layer="Dense_0", batch_size=2)(variables, x)
    p = variables["params"]
    h = jax.nn.relu(
        jax.lax.conv_general_dilated(
            x, p["Conv_0"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + p["Conv_0"]["bias"]
    )
    h = jax.nn.relu(
        jax.lax.conv_general_dilated(
            h, p["Conv_1"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + p["Conv_1"]["bias"]
    )
    want = jax.nn.relu(h.reshape(5, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    np.testing.assert_allclose(feats, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no submodule"):
        dm.feature_extractor(module, layer="Dense_9")(variables, x)


def test_grid_png_roundtrip(tmp_path):
    from PIL import Image

    imgs = np.random.default_rng(0).random((2, 3, 4, 4, 1))
    grid = dm.image_grid(imgs, pad=1, scale=2)
    assert grid.shape == ((2 * 5 + 1) * 2, (3 * 5 + 1) * 2, 1) and grid.dtype == np.uint8
    path = dm.save_png(tmp_path / "g.png", dm.side_by_side([grid, grid]))
    back = np.asarray(Image.open(path))
    assert back.shape == (grid.shape[0], 2 * grid.shape[1] + 8)
    np.testing.assert_array_equal(back[:, : grid.shape[1]], grid[..., 0])


def test_annotate_labels_a_grid_and_keeps_its_pixels():
    grid = dm.image_grid(np.zeros((3, 2, 4, 4, 1)), pad=1, scale=4)  # black cells
    rows = dm.class_labels(3, 1)
    assert rows == ["class 0", "class 1 (forgotten)", "class 2"]
    assert dm.class_labels(2, 0, ["plane", "car"]) == ["plane (forgotten)", "car"]
    out = dm.annotate(grid, title="t", row_labels=rows, column_labels=["a"])
    h, w = grid.shape[:2]
    assert out.dtype == np.uint8 and out.shape[2] == 1 and out.shape[0] > h and out.shape[1] > w
    np.testing.assert_array_equal(out[-h:, -w:], grid)  # the samples, untouched
    top, left = out.shape[0] - h, out.shape[1] - w
    assert (out[:top] < 128).any()  # the title and the column label are drawn
    for r in range(3):  # a label beside every row, on white
        band = out[top + r * h // 3 : top + (r + 1) * h // 3, :left]
        assert (band < 128).any() and (band == 255).any(), r
    rgb = dm.annotate(np.full((20, 30, 3), 7, np.uint8), title="colour")
    assert rgb.shape[2] == 3 and (rgb[-20:, :30] == 7).all()  # a title wider than the image
    with pytest.raises(ValueError, match="annotate: need uint8"):
        dm.annotate(np.zeros((4, 4, 1), np.float32), title="t")


# ---------------------------------------------------------------- command and config


def test_generate_demo_is_the_pipeline_on_its_config(tmp_path, monkeypatch, capsys):
    """generate-demo = diffusion-train, diffusion-unlearn per method, diffusion-evaluate on
    digits_ddpm_class0, with the flags as --set items; it prints the evaluation table."""
    from scissorhands_jax.experiment import generation

    calls = []
    row = {"model": "original", "forget_share": 100.0, "forget_prob": 1.0, "other_acc": 97.25,
           "frechet": 9.5, "rte_s": 3.0}  # fmt: skip

    def load(config, *, smoke, overrides):
        calls.append(("load", config, smoke, tuple(overrides)))
        return {"config_path": config}

    monkeypatch.setattr(generation, "load_generation_config", load)
    monkeypatch.setattr(
        generation,
        "train_generators",
        lambda cfg, out, **kw: calls.append(("train", str(out))) or 0,
    )
    monkeypatch.setattr(
        generation,
        "unlearn_generator",
        lambda cfg, out, method, **kw: calls.append(("unlearn", method)),
    )
    monkeypatch.setattr(generation, "evaluate_generators",
                        lambda cfg, out, **kw: calls.append(("evaluate", kw["fid_features"]))
                        or {"rows": [row], "files": ["before_after.png"]})  # fmt: skip
    out = str(tmp_path / "gen")
    argv = ["generate-demo", "--out", out, "--forget-class", "3", "--seed", "1", "--smoke"]
    argv += ["--methods", "scissorhands", "salun", "--set", "salun.steps=7"]
    argv += ["--fid-features", "numpy:ravel", "--no-progress", "--mesh", "1"]
    assert cli.main(argv) == 0
    sets = ("data.forget_class=3", "train.seed=1", "retrain.seed=1", "classifier.seed=1",
            "sample.seed=1", "scissorhands.seed=1", "scissorhands_anchor.seed=1",
            "salun.seed=1", "finetune.seed=1", "salun.steps=7")  # fmt: skip
    assert calls == [
        ("load", "digits_ddpm_class0", True, sets),
        ("train", out),
        ("unlearn", "scissorhands"),
        ("unlearn", "salun"),
        ("evaluate", np.ravel),
    ]
    printed = capsys.readouterr().out
    assert "| original | 100.000 | 1.000 | 97.250 | 9.500 | - | 3.000 |" in printed
    assert "lower is better" in printed  # the legend under the table
    with pytest.raises(SystemExit):  # argparse refuses an unknown method
        cli.main(["generate-demo", "--out", out, "--methods", "ga", "--no-progress"])
    assert "invalid choice: 'ga'" in capsys.readouterr().err


def test_diffusion_commands_offer_the_registry():
    from scissorhands_jax.commands import diffusion_unlearn

    assert set(diffusion_unlearn.METHODS) == set(dm.DIFFUSION_METHODS)


def test_format_rows_by_hand():
    from scissorhands_jax.experiment.generation import format_rows

    rows = [{"model": "salun", "forget_share": 24.0, "forget_prob": 0.2541, "other_acc": 96.4,
             "frechet": 8.51, "fid": None, "rte_s": 26.1}]  # fmt: skip
    assert format_rows(rows).splitlines() == [
        "| model | forget_share | forget_prob | other_acc | frechet | fid | rte_s |",
        "|---|---|---|---|---|---|---|",
        "| salun | 24.000 | 0.254 | 96.400 | 8.510 | - | 26.100 |",
    ]


def test_cifar10_config_documents_the_settings():
    from scissorhands_jax.experiment.config import load_config

    path = Path(__file__).resolve().parents[1] / "scissorhands_jax/configs/cifar10_ddpm_class0.py"
    spec = importlib.util.spec_from_file_location("cifar10_ddpm_class0", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for word in ("SalUn", "Scissorhands", "Expected", "scissorhands diffusion-train"):
        assert word in module.__doc__
    cfg = load_config(path, kind="diffusion")
    unet = dm.UNet(
        num_classes=10,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()},
    )
    assert unet.ch_mult == (1, 2, 2, 2) and unet.attn_resolutions == (16,)
    assert cfg["diffusion"]["schedule"]["num_timesteps"] == 1000
    # SalUn's DDPM and unlearning settings, typed from the header by hand
    t = cfg["train"]
    assert (t["steps"], t["lr"], t["batch_size"], t["grad_clip"], t["ema_decay"]) == (
        800_000,
        2e-4,
        128,
        1.0,
        0.9999,
    )
    s = cfg["salun"]
    assert (s["mask_ratio"], s["saliency_guidance"], s["lr"], s["steps"]) == (0.5, 2.0, 1e-4, 500)
    assert s["alpha"] == pytest.approx(1e-3 * 3072) and cfg["data"]["random_flip"]
    sh = cfg["scissorhands"]
    assert (sh["sparsity"], sh["saliency_guidance"], sh["lam"], sh["lr"]) == (0.999, 8.5, 0.1, 2e-5)
    assert sh["reinit"] == "trunc_normal" and sh["projection"] == "none"
    # every method section holds exactly the method's hyperparameters, and a seed
    from scissorhands_jax.diffusion.baselines import method_defaults

    for section in dm.DIFFUSION_METHODS:
        assert set(cfg[section]) - {"seed"} == set(method_defaults(section)), section
    assert set(cfg["diffusion"]["schedule"]) <= set(inspect.signature(dm.make_schedule).parameters)


# ---------------------------------------------------------------- one method API


def test_scissorhands_diffusion_takes_the_settings_dataclasses():
    params = inspect.signature(dm.scissorhands_diffusion).parameters
    assert len(params) <= 12
    assert params["trim"].annotation in ("TrimSettings", shs.TrimSettings)
    assert params["projection"].annotation in ("ProjectionSettings", shs.ProjectionSettings)
    assert params["repair"].annotation in ("AdamRepairSettings", shs.AdamRepairSettings)
    assert params["objective"].annotation in ("DiffusionObjective", dm.DiffusionObjective)
    # the defaults are written once: the release's class recipe, typed here by hand
    assert params["trim"].default == shs.TrimSettings(sparsity=0.999, reinit="trunc_normal")
    assert params["projection"].default.projection == "none"
    assert params["repair"].default == shs.AdamRepairSettings(
        lr=2e-5, steps=500, lam=0.1, batch_size=128, grad_clip=None
    )
    assert params["objective"].default == dm.DiffusionObjective("contrast", None, 8.5)


def test_adam_repair_settings_check_every_value():
    assert shs.AdamRepairSettings(lr=np.float32(0.5), steps=np.int64(3)).steps == 3
    for bad, match in (
        ({"lr": 0.0}, "lr must be > 0"),
        ({"steps": -1}, "steps must be an integer >= 0"),
        ({"lam": -0.1}, "lam must be >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0"),
        ({"memory_every": 0}, "memory_every must be an integer >= 1"),
        ({"log_every": 1.5}, "log_every must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            shs.AdamRepairSettings(**bad)


def test_flat_settings_map_onto_the_dataclasses():
    from scissorhands_jax.diffusion import unlearn

    kw = unlearn.from_flat(sparsity=0.9, lam=2.0, projection="gem", anchor=3, objective="anchor",
                           trainable="up_attn")  # fmt: skip
    assert kw["trim"] == shs.TrimSettings(sparsity=0.9, reinit="trunc_normal")
    assert kw["repair"].lam == 2.0 and kw["repair"].lr == 2e-5
    assert kw["projection"].projection == "gem" and kw["objective"] == dm.DiffusionObjective(
        "anchor", 3, 8.5
    )
    assert kw["eligible"] == "up_attn" and kw["trainable"] == "up_attn"
    assert set(kw) == set(inspect.signature(dm.scissorhands_diffusion).parameters) - {
        "model", "params", "retain", "forget", "key", "progress"
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['mask_ratio'\]"):
        unlearn.from_flat(mask_ratio=0.5)


def test_registry_and_hyperparameters():
    assert set(dm.DIFFUSION_METHODS) == {"scissorhands", "scissorhands_anchor", "salun", "finetune"}
    for name, cls in dm.DIFFUSION_HYPERPARAMETERS.items():
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
    hp = dm.SalunDiffusionHyperparameters()
    assert (hp.mask_ratio, hp.saliency_guidance, hp.anchor, hp.lr, hp.steps) == (
        0.5, 2.0, "next", 1e-4, 500
    )  # fmt: skip
    assert hp.alpha == pytest.approx(3.072)
    with pytest.raises(ValueError, match=r"salun has no hyperparameter\(s\) \['ratio'\]"):
        dm.SalunDiffusionHyperparameters.of("salun", {"ratio": 0.5})
    with pytest.raises(ValueError, match="mask_ratio must be < 1"):
        dm.SalunDiffusionHyperparameters(mask_ratio=1.0)
    with pytest.raises(ValueError, match="anchor must be one of"):
        dm.SalunDiffusionHyperparameters(anchor="previous")
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        dm.FinetuneDiffusionHyperparameters(steps=-1)


def test_losses_are_chosen_by_function_not_by_batch():
    """The model's ε-loss ignores an "anchor" entry; its anchor loss needs one; its guided
    loss is the same function for the same scale (one compiled program per scale)."""
    model = dm.diffusion_model(
        _tiny_unet(), image_shape=(8, 8, 1), num_classes=3,
        schedule=dm.make_schedule("linear", 10), p_uncond=0.0,
    )  # fmt: skip
    params = model.init(jax.random.key(0))[0]
    batch = next(iter(dm.diffusion_source(_toy_data(), 4)(jax.random.key(1))))
    plain = float(model.loss(params, {}, batch, False)[0])
    with_anchor = {**batch, "anchor": np.zeros(4, np.int32)}
    assert float(model.loss(params, {}, with_anchor, False)[0]) == plain
    anchor = float(model.anchor_loss(params, {}, with_anchor, False)[0])
    assert anchor != plain
    with pytest.raises(KeyError, match="anchor"):
        model.anchor_loss(params, {}, batch, False)
    assert model.guided_loss(None) is model.loss
    assert model.guided_loss(2.0) is model.guided_loss(2.0)
    assert float(model.guided_loss(1.0)(params, {}, batch, False)[0]) == pytest.approx(plain)


def test_unlearn_generator_refuses_an_unknown_method_before_any_work(tmp_path):
    from scissorhands_jax.experiment import generation

    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"unknown method 'ga'; choose one of \['finetune'"):
        generation.unlearn_generator({"config_path": "digits_ddpm_class0"}, run, "ga")
    assert not run.exists()
