"""ESD and SalUn as methods of the Stable Diffusion recipes (``diffusion-unlearn --method
esd`` / ``salun``).

The adapters' first logged losses are checked against closed forms on a toy linear
ε-model over a table of prompt embeddings, ``eps(p, x, t, y) = x W + mean_L(E[y]) V + b``
(V under an ``attn2`` module, so that ESD-x trains it alone): at the original parameters
ESD's loss is :math:`(1+\\eta)^2` times the mean of :math:`((\\bar e_c - \\bar
e_\\varnothing) V)^2` and SalUn's forget term the mean of :math:`((\\bar e_{c_f} - \\bar
e_{c'}) V)^2`, whatever x_t, t and the noise, computed here in float64 NumPy. The
configs' sections, the refusals, and both methods end to end on a tiny random SD.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from scissorhands_jax import cli, sd  # noqa: E402
from scissorhands_jax._reinit import leaf_paths  # noqa: E402
from scissorhands_jax.diffusion.model import eps_diffusion_model  # noqa: E402
from scissorhands_jax.experiment import sd_pipeline  # noqa: E402
from scissorhands_jax.experiment._sd_eval import load_unlearned_unet  # noqa: E402
from scissorhands_jax.experiment.config import load_config  # noqa: E402

C, L, E, N = 3, 2, 4, 4  # latent channels, tokens, embedding size, forget latents
SHAPE = (2, 2, C)


def toy(num_prompts: int, seed: int = 0):
    """A prompt-conditioned toy model over ``num_prompts`` prompts (+ the empty one)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(num_prompts + 1, L, E)).astype(np.float32)
    params = {
        "W": rng.normal(size=(C, C)).astype(np.float32),
        "attn2": {"V": rng.normal(size=(E, C)).astype(np.float32)},
        "b": rng.normal(size=(C,)).astype(np.float32),
    }

    def eps(p, x_t, t, labels, train=False, rng=None):
        del t, train, rng
        text = jnp.asarray(table)[labels].mean(axis=1) @ p["attn2"]["V"]
        return x_t @ p["W"] + text[:, None, None, :] + p["b"]

    model = eps_diffusion_model(
        eps, lambda key: (params, {}), image_shape=SHAPE, num_classes=num_prompts,
        schedule=sd.SchedulerConfig().schedule(),
    )  # fmt: skip
    return model, jax.tree.map(jnp.asarray, params), table


def latents(labels, seed=1):
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(len(labels), *SHAPE)).astype(np.float32),
            "label": np.asarray(labels, np.int32)}  # fmt: skip


def text_gap(table, params, a, b):
    """mean over channels of ((mean_L E[a] - mean_L E[b]) V)^2 in float64."""
    m = np.asarray(table, np.float64).mean(axis=1)
    v = np.asarray(params["attn2"]["V"], np.float64)
    return float(np.mean(((m[a] - m[b]) @ v) ** 2))


def changed(before, after):
    return jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)


# ---------------------------------------------------------------- toy closed forms


def test_esd_trains_the_concept_against_the_empty_prompt():
    model, params, table = toy(num_prompts=2)
    eta = 0.5
    result = sd.esd_unlearn(model, params, retain=None, forget=latents([1] * N),
                            key=jax.random.key(0), iterations=3, batch_size=2, lr=1e-3,
                            negative_guidance=eta, variant="x", log_every=1)  # fmt: skip
    mask_entry, first, *rest = result.log
    assert mask_entry["selected"] == E * C  # ESD-x: the attn2 leaf, every entry
    # concept: label 1; unconditional branch: the null label 2 (the empty prompt)
    expected = (1 + eta) ** 2 * text_gap(table, params, 1, 2)
    np.testing.assert_allclose(first["loss"], expected, rtol=1e-5)
    assert [e["step"] for e in result.log] == [0, 1, 2, 3]
    assert all(np.isfinite(e["loss"]) for e in [first, *rest])
    assert changed(params, result.params) == {"W": False, "attn2": {"V": True}, "b": False}
    assert result.mask["attn2"]["V"].shape == (E, C) and result.mask["attn2"]["V"].all()
    assert not result.mask["W"].any()


def test_salun_pulls_the_forget_prompt_towards_the_anchor():
    model, params, table = toy(num_prompts=3)
    forget, retain = latents([1] * N), latents([0, 0, 2, 2], seed=2)
    result = sd.salun_unlearn(model, params, retain=retain, forget=forget,
                              key=jax.random.key(0), epochs=1, batch_size=2, lr=1e-3,
                              alpha=0.0, ratio=0.5, pseudo_label=0, log_every=1)  # fmt: skip
    mask_entry, first, second = result.log
    assert [first["step"], second["step"]] == [1, 2]  # one epoch of 4 forget latents at 2
    np.testing.assert_allclose(first["loss_forget"], text_gap(table, params, 1, 0), rtol=1e-5)
    np.testing.assert_allclose(first["loss"], first["loss_forget"], rtol=1e-6)  # alpha 0
    assert np.isfinite(first["loss_retain"])
    # the top half of |gradient| entries, ties broken by position: ceil(0.5 * 21)
    total = C * C + E * C + C
    assert mask_entry["selected"] == total - total // 2
    for p, q, m in zip(jax.tree.leaves(params), jax.tree.leaves(result.params),
                       jax.tree.leaves(result.mask), strict=True):  # fmt: skip
        p, q, m = np.asarray(p), np.asarray(q), np.asarray(m)
        assert np.array_equal(p[~m], q[~m])  # frozen entries stay bit-identical
    moved = changed(params, result.params)
    assert any(jax.tree.leaves(moved))


def test_salun_draws_another_class_for_each_forget_image():
    model, params, table = toy(num_prompts=3)
    result = sd.salun_unlearn(model, params, retain=latents([1, 1, 2, 2], seed=2),
                              forget=latents([0] * N), key=jax.random.key(3), epochs=1,
                              batch_size=N, alpha=0.0, log_every=1)  # fmt: skip
    # each of the 4 images is paired with class 1 or 2: the term is one of 5 averages
    gaps = text_gap(table, params, 0, 1), text_gap(table, params, 0, 2)
    possible = [(j * gaps[0] + (N - j) * gaps[1]) / N for j in range(N + 1)]
    assert np.min(np.abs(np.array(possible) - result.log[1]["loss_forget"])) < 1e-5 * gaps[0]


def test_the_adapters_refuse_bad_settings_before_any_step():
    model, params, _ = toy(num_prompts=2)
    data = {"retain": latents([0] * N), "forget": latents([1] * N), "key": jax.random.key(0)}
    with pytest.raises(ValueError, match=r"esd has no hyperparameter\(s\) \['epochs'\]"):
        sd.esd_unlearn(model, params, epochs=1, **data)
    with pytest.raises(ValueError, match="variant"):
        sd.esd_unlearn(model, params, variant="z", **data)
    with pytest.raises(ValueError, match=r"pseudo_label .* in \[0, 2\), got 2"):
        sd.salun_unlearn(model, params, pseudo_label=2, **data)
    with pytest.raises(ValueError, match="ratio"):
        sd.salun_unlearn(model, params, ratio=1.0, **data)
    with pytest.raises(ValueError, match="forget must be a dict with 'image'"):
        sd.salun_unlearn(model, params, **{**data, "forget": np.zeros((N, *SHAPE))})


# ---------------------------------------------------------------- configs and command


@pytest.mark.parametrize(("name", "pseudo"), [("sd_nudity", 0), ("sd_imagenette", None)])
def test_configs_hold_the_papers_esd_and_salun_settings(name, pseudo):
    cfg = load_config(name, kind="sd")
    esd = cfg["esd"]
    assert (esd["lr"], esd["iterations"], esd["batch_size"]) == (1e-5, 1000, 1)
    assert (esd["negative_guidance"], esd["variant"]) == (1.0, "u")
    salun = cfg["salun"]
    assert (salun["lr"], salun["epochs"], salun["batch_size"]) == (1e-5, 5, 8)
    assert (salun["alpha"], salun["ratio"], salun["pseudo_label"]) == (0.5, 0.5, pseudo)
    if pseudo is not None:
        assert sd_pipeline.prompts_of(cfg)[0][pseudo] == cfg["recipe"]["anchor_prompt"]


def test_the_command_and_the_registry_name_the_same_sd_methods():
    from scissorhands_jax.commands import diffusion_unlearn
    from scissorhands_jax.experiment._sd_setup import SD_METHODS

    assert diffusion_unlearn.SD_METHODS == tuple(SD_METHODS) == ("scissorhands", "esd", "salun")


def test_a_bad_section_value_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    for setting, method in (("esd.variant='z'", "esd"), ("salun.ratio=1.5", "salun"),
                            ("salun.pseudo_label=-1", "salun")):  # fmt: skip
        key = setting.partition("=")[0]
        with pytest.raises(ValueError, match=key.replace(".", r"\.") + " must be"):
            load_config("sd_nudity", smoke=True, overrides=["model.tiny=True", setting],
                        kind="sd")  # fmt: skip
        argv = ["diffusion-unlearn", "sd_nudity", "--run", str(run), "--smoke", "--method",
                method, "--set", "model.tiny=True", "--set", setting]  # fmt: skip
        assert cli.main(argv) == 2
        assert f"{key} must be" in capsys.readouterr().err
        assert not run.exists()


# ---------------------------------------------------------------- end to end


@pytest.mark.slow  # about a minute: compiling the tiny UNet's programs
def test_esd_and_salun_run_on_the_nudity_recipe(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("sd_nudity", smoke=True, overrides=["model.tiny=True", "esd.variant='x'"],
                      kind="sd")  # fmt: skip
    assert sd_pipeline.prepare_sd_data(cfg, run, progress=False) == 0
    original = sd_pipeline.load_sd(cfg)[0].unet_params
    paths = leaf_paths(original)
    for method, steps in (("esd", 2), ("salun", 2)):  # SMOKE: 2 iterations; 4 latents at 2
        record = sd_pipeline.unlearn_sd(cfg, run, method, progress=False)
        assert record["steps"] == steps and record["log"][0]["epoch"] == "mask"
        assert [e["step"] for e in record["log"][1:]] == list(range(1, steps + 1))
        assert all(np.isfinite(e["loss"]) for e in record["log"][1:])
        unlearned = load_unlearned_unet(cfg, run, method, original)
        moved = [
            (path, int(np.sum(np.asarray(a) != np.asarray(b))))
            for path, a, b in zip(
                paths, jax.tree.leaves(original), jax.tree.leaves(unlearned), strict=True
            )
        ]
        touched = [path for path, n in moved if n]
        assert touched
        if method == "esd":  # ESD-x: the cross-attention only
            assert all("attn2" in path.split("/") for path in touched)
            assert record["log"][0]["selected"] == record["mask_entries"]
        else:
            assert 0 < sum(n for _, n in moved) <= record["mask_entries"]
    with pytest.raises(ValueError, match="already holds an unlearned model"):
        sd_pipeline.unlearn_sd(cfg, run, "esd", progress=False)
