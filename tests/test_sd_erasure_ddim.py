"""ESD's x_t from the trained model's own DDIM, against references written out here.

The partial sampler is checked against a float64 NumPy DDIM loop with classifier-free
guidance on a toy linear ε-model, ``eps(p, x, t, c) = x W + mean_L(c) V + (t / T) u + b``,
over its own grid and SD's "scaled_linear" schedule computed here (tolerance 1e-5 of the
largest entry: float32 against float64 over at most ten steps; the latents grow to tens). ESD's
step count is checked against a plain Python re-statement of the loop of its training
code's CompVis DDIM sampler, its timestep intervals against hand-computed values. The ESD
step with this x_t lowers the ESD loss on a tiny random SD UNet, and the setting is refused
by name, by the hyperparameters and by the command before anything is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from conftest import TINY_UNET  # noqa: E402

from scissorhands_jax import cli, sd  # noqa: E402
from scissorhands_jax.experiment import rules  # noqa: E402
from scissorhands_jax.experiment.config import load_config  # noqa: E402

D, L, E, B = 6, 3, 4, 2  # latent size, tokens, embedding size, batch
T = 1000
RTOL = 1e-5


def np_alphas_cumprod():
    """SD v1's schedule: beta linear in sqrt(beta) from 0.00085 to 0.012 over 1000 steps."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def toy(seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s).astype(np.float32)
              for k, s in (("W", (D, D)), ("V", (E, D)), ("u", (D,)), ("b", (D,)))}  # fmt: skip
    x = rng.normal(size=(B, D)).astype(np.float32)
    c, null = (rng.normal(size=(B, L, E)).astype(np.float32) for _ in range(2))
    return jax.tree.map(jnp.asarray, params), x, c, null


def toy_eps(p, x, t, c):
    return x @ p["W"] + c.mean(axis=1) @ p["V"] + (t / T)[:, None] * p["u"] + p["b"]


def np_ddim(p, x, c, null, timesteps, abar, abar_prev, scale):
    """DDIM (eta 0) with classifier-free guidance, float64, one step per timestep."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)

    def eps(x, t, ctx):
        return x @ p["W"] + np.asarray(ctx, np.float64).mean(1) @ p["V"] + t / T * p["u"] + p["b"]

    for t, a, a_prev in zip(timesteps, abar, abar_prev, strict=True):
        e0, ec = eps(x, t, null), eps(x, t, c)
        e = e0 + scale * (ec - e0)
        x0 = (x - np.sqrt(1 - a) * e) / np.sqrt(a)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * e
    return x


def close(got, want, what):
    atol = RTOL * max(float(np.max(np.abs(want))), 1.0)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=what)


def grid(n):
    """The leading grid of n steps written out: timesteps 1000/n * i + 1, i = n-1..0, each
    going to the timestep below, past the last to alpha-bar_0."""
    abar = np_alphas_cumprod()
    r = T // n
    t = [r * i + 1 for i in reversed(range(n))]
    return t, [abar[s] for s in t], [abar[s - r] if s - r >= 0 else abar[0] for s in t]


# ------------------------------------------------------------------ the sampler


def test_partial_ddim_equals_a_numpy_ddim_loop_for_every_step_count_in_one_compile():
    params, x, c, null = toy()
    n, scale = 10, 3.0
    plan = sd.ddim_steps(sd.SchedulerConfig(), n)
    ts, abar, prev = grid(n)
    np.testing.assert_array_equal(plan.timesteps, ts)
    traces = []

    def eps(p, x, t, ctx):
        traces.append(1)  # runs only while tracing
        return toy_eps(p, x, t, ctx)

    for k in (0, 1, 4, 9, n):
        got = sd.partial_ddim(eps, params, x, c, null, plan, jnp.int32(k), scale)
        want = np_ddim(params, x, c, null, ts[:k], abar[:k], prev[:k], scale)
        close(got, want, f"k={k}")
    np.testing.assert_array_equal(
        sd.partial_ddim(eps, params, x, c, null, plan, jnp.int32(0), scale), x
    )  # k = 0: the start noise itself
    assert len(traces) == 1  # one program for every count
    # counts past the plan stop at its end
    full = sd.partial_ddim(eps, params, x, c, null, plan, jnp.int32(n), scale)
    np.testing.assert_array_equal(
        sd.partial_ddim(eps, params, x, c, null, plan, jnp.int32(n + 5), scale), full
    )


def test_esd_plan_is_the_leading_grid_without_its_noisiest_step():
    schedule = sd.SchedulerConfig().schedule()
    plan = sd.esd_ddim_plan(schedule, 50)
    ts, abar, prev = grid(50)
    assert plan.timesteps.tolist() == list(range(961, 0, -20)) == ts[1:]
    np.testing.assert_allclose(plan.alphas_cumprod, abar[1:], rtol=1e-6)
    np.testing.assert_allclose(plan.alphas_cumprod_prev, prev[1:], rtol=1e-6)
    assert float(plan.alphas_cumprod_prev[-1]) == pytest.approx(np_alphas_cumprod()[0])
    full = sd.ddim_steps(sd.SchedulerConfig(), 50)  # the sampler's own plan, first row off
    for mine, theirs in zip(plan, full, strict=True):
        np.testing.assert_array_equal(mine, np.asarray(theirs)[1:])
    with pytest.raises(ValueError, match="ddim_steps must be an integer in 1..1000"):
        sd.esd_ddim_plan(schedule, 1001)


def compvis_steps(till, n):
    """How many steps the CompVis DDIM loop of ESD's training code takes with
    ``till_T=till``: the grid without its last entry (``t_start=-1``), indices counting
    down from its length - 1, a break after the step whose index + 1 equals ``till``."""
    total = n - 1
    taken = 0
    for i in range(total):
        index = total - i - 1
        taken += 1
        if index + 1 == till:
            break
    return taken


@pytest.mark.parametrize("n", [50, 10, 2])
def test_esd_step_count_is_the_compvis_loops(n):
    for t_enc in range(n):
        assert int(sd.esd_ddim_count(t_enc, n)) == compvis_steps(t_enc, n), t_enc
    if n == 50:  # by hand: t_enc 0 and 1 run all 49, then one fewer per index
        assert [int(sd.esd_ddim_count(k)) for k in (0, 1, 2, 25, 49)] == [49, 49, 48, 25, 1]
        # where x stops: two grid steps below the interval t is drawn from
        plan = sd.esd_ddim_plan(sd.SchedulerConfig().schedule(), 50)
        for t_enc in range(2, 50):
            last = int(plan.timesteps[int(sd.esd_ddim_count(t_enc)) - 1])
            assert last - 20 == 20 * t_enc - 39


def test_timestep_intervals_are_the_hand_computed_ones():
    low, high = sd.esd_timestep_bounds(50, 1000)
    assert [(low[k], high[k]) for k in (0, 1, 7, 49)] == [(0, 20), (20, 40), (140, 160),
                                                          (980, 1000)]  # fmt: skip
    low, high = sd.esd_timestep_bounds(16, 1000)  # 62.5 and 187.5: half to even
    assert [(low[k], high[k]) for k in (1, 2, 15)] == [(62, 125), (125, 188), (938, 1000)]
    low, high = sd.esd_timestep_bounds(30, 1000)  # 33.3, 66.7, 966.7
    assert [(low[k], high[k]) for k in (0, 1, 29)] == [(0, 33), (33, 67), (967, 1000)]


def test_esd_x_t_draws_t_in_the_interval_and_x_t_by_the_models_ddim():
    params, _, c, null = toy(1)
    schedule = sd.SchedulerConfig().schedule()
    n, scale = 5, 3.0
    settings = {"latent_shape": (D,), "ddim_steps": n, "start_guidance": scale}
    draw = jax.jit(lambda key: sd.esd_x_t(toy_eps, params, schedule, c, null, key, **settings))
    ts, abar, prev = grid(n)
    seen = set()
    for i in range(40):
        key = jax.random.key(i)
        x_t, t = draw(key)
        t = np.asarray(t)
        t_enc = int(t[0]) // (T // n)  # the intervals of n = 5: [200 k, 200 k + 200)
        assert t.dtype == np.int32 and x_t.shape == (B, D)
        assert np.all(t // (T // n) == t_enc)  # one t_enc per batch
        seen.add(t_enc)
        steps = n - 1 if t_enc == 0 else n - t_enc  # rows 1.. of the grid, written out
        x_T = jax.random.normal(jax.random.split(key, 3)[1], (B, D))
        want = np_ddim(params, x_T, c, null, ts[1 : 1 + steps], abar[1 : 1 + steps],
                       prev[1 : 1 + steps], scale)  # fmt: skip
        close(x_t, want, f"t_enc={t_enc}")
    assert seen == set(range(n))


def test_no_gradient_flows_through_the_sampling():
    params, _, c, null = toy(2)
    schedule = sd.SchedulerConfig().schedule()
    key = jax.random.key(3)

    def through(p):
        x_t, t = sd.esd_x_t(toy_eps, p, schedule, c, null, key, latent_shape=(D,),
                            ddim_steps=4)  # fmt: skip
        return sd.esd_loss(toy_eps, p, params, x_t, t, c, null)

    x_t, t = sd.esd_x_t(toy_eps, params, schedule, c, null, key, latent_shape=(D,), ddim_steps=4)
    held = jax.grad(lambda p: sd.esd_loss(toy_eps, p, params, x_t, t, c, null))(params)
    for a, b in zip(jax.tree.leaves(jax.grad(through)(params)), jax.tree.leaves(held),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# -------------------------------------------------------------------- the step


def test_a_ddim_step_takes_prompts_only_and_needs_the_latent_shape():
    params, x, c, null = toy()
    schedule = sd.SchedulerConfig().schedule()
    hp = sd.ESDHyperparameters(lr=1e-2, variant="x", ddim_steps=4)
    named = {"attn2": {"V": params["V"]}, "rest": {k: params[k] for k in ("W", "u", "b")}}

    def eps(p, x, t, ctx):
        return toy_eps({"V": p["attn2"]["V"], **p["rest"]}, x, t, ctx)

    with pytest.raises(ValueError, match="latent_shape"):
        sd.make_esd_step(eps, schedule, hp)
    with pytest.raises(ValueError, match="ddim_steps must be an integer in 1..1000"):
        sd.make_esd_step(eps, schedule, sd.ESDHyperparameters(ddim_steps=2000),
                         latent_shape=(D,))  # fmt: skip
    step = sd.make_esd_step(eps, schedule, hp, latent_shape=(D,))
    state = sd.init_erasure_state(named, sd.esd_mask(named, "x"), jax.random.key(0), hp)
    with pytest.raises(ValueError, match="x_t='noised'"):
        step(state, {"latents": x, "context": c, "uncond": null})
    with pytest.raises(ValueError, match="uncond"):
        step(state, {"context": c})
    state, metrics = step(state, {"context": c, "uncond": null})
    assert state.step == 1 and np.isfinite(float(metrics["loss"]))
    assert not np.array_equal(state.params["attn2"]["V"], params["V"])
    np.testing.assert_array_equal(state.params["rest"]["W"], params["W"])


UNET = TINY_UNET


@pytest.mark.slow  # compiling the tiny UNet's step with its DDIM loop
def test_esd_steps_with_ddim_x_t_lower_the_esd_loss_on_a_tiny_unet():
    unet = sd.UNet(sd.UNetConfig(**UNET))
    init = jax.jit(unet.init)(
        jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 5, 32))
    )
    rng = np.random.default_rng(0)  # off the initial values: zero outputs would hide terms
    params = jax.tree.map(
        lambda a: jnp.asarray(a + 0.05 * rng.normal(size=a.shape).astype(np.float32)),
        init["params"],
    )
    eps, schedule = sd.unet_eps(unet), sd.SchedulerConfig().schedule()
    k = jax.random.split(jax.random.key(1), 2)
    concept = jnp.broadcast_to(jax.random.normal(k[0], (1, 5, 32)), (2, 5, 32))
    null = jnp.broadcast_to(jax.random.normal(k[1], (1, 5, 32)), (2, 5, 32))
    hp = sd.ESDHyperparameters(lr=3e-3, variant="x", ddim_steps=5)

    # held-out draws of ESD's (x_t, t) from the original model, scored before and after
    held = [sd.esd_x_t(eps, params, schedule, concept, null, jax.random.key(100 + i),
                       latent_shape=(8, 8, 4), ddim_steps=5) for i in range(4)]  # fmt: skip

    def held_loss(p):
        return float(np.mean([sd.esd_loss(eps, p, params, x, t, concept, null) for x, t in held]))

    state = sd.init_erasure_state(params, sd.esd_mask(params, "x"), jax.random.key(2), hp)
    step = sd.make_esd_step(eps, schedule, hp, latent_shape=(8, 8, 4))
    before = held_loss(params)
    for _ in range(8):
        state, metrics = step(state, {"context": concept, "uncond": null})
        assert np.isfinite(float(metrics["loss"]))
    after = held_loss(state.params)
    assert after < 0.7 * before, (before, after)


MESH_DEVICES = 4


def _mesh_worker() -> dict:
    """Runs in a subprocess with 4 CPU devices: two ESD-u steps with DDIM x_t on a toy
    linear model, its parameters split over the mesh, against the same on one device."""
    from scissorhands_jax import parallel

    rng = np.random.default_rng(0)
    n, width = 8, 8
    params = {
        "attn2": {"V": rng.normal(size=(E, width)).astype(np.float32)},
        "conv": {"W": (rng.normal(size=(width, width)) / 4).astype(np.float32),
                 "u": rng.normal(size=(width,)).astype(np.float32),
                 "b": rng.normal(size=(width,)).astype(np.float32)},
    }  # fmt: skip
    batch = {k: rng.normal(size=(n, L, E)).astype(np.float32) for k in ("context", "uncond")}

    def eps(p, x, t, ctx):
        return toy_eps({"V": p["attn2"]["V"], **p["conv"]}, x, t, ctx)

    hp = sd.ESDHyperparameters(lr=1e-3, variant="u", ddim_steps=4)
    step = sd.make_esd_step(eps, sd.SchedulerConfig().schedule(), hp, latent_shape=(width,))
    mesh = parallel.data_mesh()
    runs = []
    for tree in (jax.tree.map(jnp.asarray, params),
                 parallel.on_mesh(params, mesh, shard=True, min_size=16)):  # fmt: skip
        state = sd.init_erasure_state(tree, sd.esd_mask(tree, "u"), jax.random.key(1), hp)
        losses = []
        for _ in range(2):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        runs.append((losses, jax.tree.map(np.asarray, state.params), state.params))
    (ref_loss, ref, _), (par_loss, par, placed) = runs
    return {
        "device_count": jax.device_count(),
        "split": ["data" in str(a.sharding.spec) for a in jax.tree.leaves(placed)],
        "loss_rel": max(abs(a - b) / a for a, b in zip(ref_loss, par_loss, strict=True)),
        "params_abs": max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(par), strict=True)
        ),  # fmt: skip
    }


@pytest.mark.slow  # a JAX process of its own with 4 virtual devices
def test_ddim_steps_on_4_virtual_devices_give_the_numbers_of_one():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={MESH_DEVICES}"
    )
    done = subprocess.run(
        [sys.executable, __file__, "mesh"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["device_count"] == MESH_DEVICES
    # leaf order attn2/V (4, 8), conv/W (8, 8), conv/b, conv/u: the two matrices (at least
    # min_size = 16 entries) are split, the vectors stay whole
    assert got["split"] == [True, True, False, False]
    # float32 sums in another order: the loss to 1e-5 relative; Adam moves each entry by
    # about lr per step, so two steps agree within a small multiple of lr's rounding
    assert got["loss_rel"] < 1e-5 and got["params_abs"] < 2e-6


# ------------------------------------------------------------------ the setting


def test_the_rules_know_the_same_x_t_sources():
    assert rules.ESD_X_T == sd.ESD_X_T == ("ddim", "noised")
    assert sd.ESDHyperparameters().x_t == "ddim"
    with pytest.raises(ValueError, match=r"x_t must be one of \('ddim', 'noised'\)"):
        sd.ESDHyperparameters(x_t="sampled")


def test_the_configs_draw_x_t_by_ddim_as_the_paper():
    for name in ("sd_nudity", "sd_imagenette"):
        esd = load_config(name, kind="sd")["esd"]
        assert (esd["x_t"], esd["ddim_steps"], esd["start_guidance"]) == ("ddim", 50, 3.0)


def test_an_unknown_x_t_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"esd\.x_t must be one of 'ddim', 'noised'"):
        load_config("sd_nudity", smoke=True, overrides=["model.tiny=True", "esd.x_t='sampled'"],
                    kind="sd")  # fmt: skip
    for command in (["diffusion-train", "sd_nudity", "--out"],
                    ["diffusion-unlearn", "sd_nudity", "--method", "esd", "--run"]):  # fmt: skip
        argv = [*command, str(run), "--smoke", "--set", "model.tiny=True",
                "--set", "esd.x_t='sampled'"]  # fmt: skip
        assert cli.main(argv) == 2
        assert "esd.x_t must be one of 'ddim', 'noised'" in capsys.readouterr().err
        assert not run.exists()


if __name__ == "__main__" and sys.argv[1:] == ["mesh"]:
    print(json.dumps(_mesh_worker()))
