"""Regression pins: the methods' outputs for fixed keys on tiny inputs.

These pin the behaviour across refactors (same key, same result); they are no
correctness evidence on their own (that is the job of the independent-reference tests
in the other files). ``python tests/test_pins.py --write`` records new pins, which is
only right when a change of behaviour is intended and explained in the commit. Floats
are compared within the measured spread across CPUs and XLA builds, masks and counts
exactly (``tests/_pinning.py``).
"""

from __future__ import annotations

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

pytestmark = pytest.mark.slow  # end to end

PINS = Path(__file__).parent / "pins" / "pins.json"


def fingerprint(tree) -> list[list[float]]:
    """Per leaf: sum, sum of squares, and the first three entries (float64)."""
    out = []
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        x = np.asarray(leaf, np.float64).ravel()
        out.append([float(x.sum()), float((x**2).sum()), *map(float, x[:3])])
    return out


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


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


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


def _record(name):
    out = CASES[name]()
    return {k: (v if k.endswith("log") or k == "step" else fingerprint(v)) for k, v in out.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pinned_outputs(name):
    want = json.loads(PINS.read_text())[name]
    got = json.loads(json.dumps(_record(name)))  # the JSON round trip the pins went through
    assert_matches_pin(got, want, name)


if __name__ == "__main__" and "--write" in sys.argv:
    PINS.parent.mkdir(exist_ok=True)
    PINS.write_text(json.dumps({n: _record(n) for n in sorted(CASES)}, indent=1) + "\n")
    print("wrote", PINS)
