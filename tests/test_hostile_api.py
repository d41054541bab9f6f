"""The library's answers to careless or hostile input: a clear error before any work,
or a result that is right, never a silently wrong one.

Each test is one case of a sweep through the API: settings of the wrong type or range,
a learning rate that destroys the model, rank-deficient or non-finite projection
memories, re-initialisation trees of another shape, tied saliency scores, and data the
model cannot read. References are independent: NumPy least squares, SciPy's NNLS, a
stable sort, hand-built trees.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import nnls

import scissorhands_jax as shs
from scissorhands_jax.loop import TrainState, run_steps

# ------------------------------------------------------------------- 1. settings, lr


@pytest.mark.parametrize(
    "cls, field, value, pattern",
    [
        (shs.RepairSettings, "momentum", 1.5, r"momentum must be < 1.0, got 1.5; SGD"),
        (shs.RepairSettings, "momentum", -0.1, "momentum must be >= 0"),
        (shs.RepairSettings, "lam", -0.5, "lam must be >= 0"),
        (shs.RepairSettings, "lam", float("nan"), "lam must be a finite number, got nan"),
        (shs.RepairSettings, "weight_decay", -1e-4, "weight_decay must be >= 0"),
        (shs.RepairSettings, "lr", "5e-3", r"lr must be a finite number, got '5e-3'"),
        (shs.RepairSettings, "lr", True, "lr must be a finite number, got True"),
        (shs.RepairSettings, "lr", jnp.ones(2), "lr must be a finite number"),
        (shs.ProjectionSettings, "margin", -0.5, "margin must be >= 0"),
        (shs.ProjectionSettings, "margin", float("inf"), "margin must be a finite number"),
        (shs.ProjectionSettings, "cumulative", "no", "cumulative_memory must be True or False"),
        (shs.TrimSettings, "saliency_train_mode", "yes", "saliency_train_mode must be True"),
        (shs.TrimSettings, "ties", "random", "ties must be one of"),
        (shs.TrainingSettings, "progress", "no", "progress must be True or False"),
    ],
)
def test_settings_refuse_wrong_types_and_ranges(cls, field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(**{field: value})


def test_settings_take_numpy_and_jax_scalars_as_python_numbers():
    trim = shs.TrimSettings(sparsity=jnp.float32(0.9), prune_num=np.int64(2))
    assert trim.sparsity == float(np.float32(0.9)) and type(trim.sparsity) is float
    assert trim.prune_num == 2 and type(trim.prune_num) is int
    repair = shs.RepairSettings(lr=np.float32(0.25), epochs=jnp.int32(3))
    assert (repair.lr, repair.epochs) == (0.25, 3) and type(repair.epochs) is int
    hash(repair)  # a settings object stays hashable (it keys compiled programs)
    # a settings argument that is not its dataclass is refused before any work
    with pytest.raises(TypeError, match="repair must be a RepairSettings"):
        shs.scissorhands(None, {}, retain={}, forget={}, key=None, repair={"lr": 1e-3})


def test_train_objective_refuses_a_negative_or_non_finite_lr():
    from scissorhands_jax.objective import adam_tx, train_objective

    for lr in (-1e-4, 0.0, float("nan")):
        with pytest.raises(ValueError, match="lr must be"):
            train_objective(None, {}, retain=None, key=jax.random.key(0), steps=1, lr=lr,
                            tx=adam_tx())  # fmt: skip


def _scripted(losses, batches=None):
    """A step function whose retain losses are ``losses`` (no parameters move)."""

    scripted = iter(losses)

    def step(state, batch):
        del batch
        return state._replace(step=state.step + 1), (jnp.float32(next(scripted)), None)

    pairs = [(b, None) for b in (batches or [{"x": np.zeros(2, np.float32)}] * len(losses))]
    return step, pairs


def test_divergence_is_named_at_the_step_it_happens():
    from scissorhands_jax.loop import DIVERGENCE_FACTOR

    # first loss 2.0: the bound is 1000 * 2; step 4 passes it, finite all along
    losses = [2.0, 3.0, 50.0, 2.5e3, 1e9, 1e12]
    step, pairs = _scripted(losses)
    state = TrainState(0, {}, {}, ())
    with pytest.raises(FloatingPointError, match=r"repair epoch 0: .*diverged at step 4.*lower"):
        run_steps(step, state, pairs, desc="repair epoch 0")
    # below the bound nothing is raised, and a small start is measured against 1
    fine, pairs = _scripted([1e-4, 0.5, 900.0])
    assert run_steps(fine, state, pairs)[0].step == 3
    assert DIVERGENCE_FACTOR == 1e3


def test_a_guard_spans_the_epochs_of_a_run():
    from scissorhands_jax.loop import LossGuard

    guard = LossGuard()
    state = TrainState(0, {}, {}, ())
    step, pairs = _scripted([0.1, 0.2])
    state, _ = run_steps(step, state, pairs, guard=guard)
    step, pairs = _scripted([1500.0])  # would be fine as a run of its own
    with pytest.raises(FloatingPointError, match="diverged at step 3"):
        run_steps(step, state, pairs, guard=guard, desc="repair epoch 1")


def test_nan_in_a_later_batch_is_named_as_the_data():
    batches = [{"image": np.zeros((2, 3), np.float32)} for _ in range(3)]
    batches[2] = {"image": np.array([[0, np.nan, 0], [0, 0, 0]], np.float32)}
    step, pairs = _scripted([1.0, 1.0, float("nan")], batches)
    with pytest.raises(FloatingPointError, match=r"step 3 .*retain batch holds 1 NaN or inf.*"
                                                 r"\['image'\].*the data"):  # fmt: skip
        run_steps(step, TrainState(0, {}, {}, ()), pairs)


def test_destructive_lr_stops_with_divergence(digits_model, original):
    split = shs.data.load_digits10("random10", 0)
    with pytest.raises(FloatingPointError, match=r"diverged at step \d+.*lower the learning"):
        shs.scissorhands(
            digits_model, *original, retain=split.retain, forget=split.forget,
            key=jax.random.key(0), eligible="all_but_first_conv",
            repair=shs.RepairSettings(lr=1e3, epochs=1),
            training=shs.TrainingSettings(batch_size=64, progress=False),
        )  # fmt: skip


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1, float("nan")])
def test_every_sgd_builder_refuses_a_momentum_outside_0_1(momentum):
    # momentum 1.5 once trained to a loss of 2.5e13 and saved the model as complete
    from scissorhands_jax.baselines import HYPERPARAMETERS
    from scissorhands_jax.resumable import step_decay_sgd

    with pytest.raises(ValueError, match="momentum must be"):
        shs.sgd(0.1, momentum=momentum)
    with pytest.raises(ValueError, match="momentum must be"):
        step_decay_sgd(0.1, steps_per_epoch=3, momentum=momentum)
    with pytest.raises(ValueError, match="momentum must be"):
        HYPERPARAMETERS["ft"].of("ft", {"momentum": momentum})
    shs.sgd(0.1, momentum=0.0), shs.sgd(0.1, momentum=0.99)  # the edges inside pass


@pytest.mark.parametrize("seed", [-1, 2**31, 2**32, True, 1.0, "0"])
def test_int_seeds_are_bounded_to_what_a_key_holds(seed):
    # jax.random.key(2**32) is key(0) and key(-1) is key(2**32 - 1): such seeds once
    # aliased other seeds silently
    from scissorhands_jax.data.splits import holdout_validation, select_forget_indices
    from scissorhands_jax.population import membership_matrix

    labels = np.arange(300) % 10
    calls = [
        lambda: shs.data.load_digits10("random10", seed),
        lambda: membership_matrix(seed, 2, 10),
        lambda: holdout_validation(labels, 0.1, seed),
        lambda: select_forget_indices(
            labels, np.arange(300), kind="random", fraction=0.1, seed=seed
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"seed.* must be an integer in \[0, 2\*\*31\)"):
            call()
    assert membership_matrix(np.int64(2**31 - 1), 2, 10).shape == (2, 10)


# ------------------------------------------------------------------- 2. projections

G = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0], np.float64)
ROWS = {
    "zero": [[0, 0, 0, 0, 0, 0]],
    "zero_and_one": [[0, 0, 0, 0, 0, 0], [-1, 2, 0, 1, 0, 0]],
    "duplicates": [[-1, 2, 0, 1, 0, 0], [-1, 2, 0, 1, 0, 0]],
    "scaled": [[-1, 2, 0, 1, 0, 0], [-3, 6, 0, 3, 0, 0]],
    "opposite": [[-1, 2, 0, 1, 0, 0], [1, -2, 0, -1, 0, 0]],
    "dependent": [[-1, 2, 0, 1, 0, 0], [0, 0, -1, 0, 1, 1], [-1, 2, -1, 1, 1, 1]],
}


def _tree(vec, lead=()):
    """A two-leaf tree (``a``: 2 x 2, ``b``: 2) from a flat vector (or rows of them)."""
    vec = np.asarray(vec, np.float32)
    return {"a": vec[..., :4].reshape(*lead, 2, 2), "b": vec[..., 4:].reshape(*lead, 2)}


def _flat(tree):
    return np.concatenate([np.ravel(tree["a"]), np.ravel(tree["b"])]).astype(np.float64)


@pytest.mark.parametrize("rows", list(ROWS))
def test_orthogonal_eps0_handles_rank_deficient_memories(rows):
    m = np.asarray(ROWS[rows], np.float64)
    tx = shs.orthogonal_projection(eps=0.0)
    g = _tree(G)
    got = _flat(tx.update(g, tx.init(g), memory=_tree(m, (len(m),)))[0])
    coef = np.linalg.lstsq(m.T, G, rcond=None)[0]  # the least-squares reference
    want = G - m.T @ coef
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(m @ got) < 1e-4)  # orthogonal to every memory


def _gem_reference(m, g, margin):
    """g + M^T v with v = margin + w, w >= 0 minimising ||g + M^T v||^2 (the dual QP at
    eps = 0, rewritten as non-negative least squares); g itself without a conflict."""
    if np.all(m @ g >= 0):
        return g
    w = nnls(m.T, -(g + margin * m.sum(axis=0)))[0]
    return g + m.T @ (w + margin)


@pytest.mark.parametrize("margin", [0.0, 0.5])
@pytest.mark.parametrize("rows", list(ROWS))
def test_gem_eps0_handles_rank_deficient_memories(rows, margin):
    m = np.asarray(ROWS[rows], np.float64)
    tx = shs.gem_projection(margin=margin, eps=0.0)
    g = _tree(G)
    for update in (tx.update, jax.jit(tx.update)):
        got = _flat(update(g, tx.init(g), memory=_tree(m, (len(m),)))[0])
        np.testing.assert_allclose(got, _gem_reference(m, G, margin), rtol=1e-4, atol=1e-4)


def test_gem_eps0_many_memories_with_zero_rows():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(12, 6))
    m[[2, 7]] = 0.0  # t = 12 > 10: the iterative solver
    m[5] = m[4]
    tx = shs.gem_projection(margin=0.0, eps=0.0)
    g = _tree(G)
    got = _flat(tx.update(g, tx.init(g), memory=_tree(m, (12,)))[0])
    np.testing.assert_allclose(got, _gem_reference(m, G, 0.0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("make", [shs.gem_projection, shs.orthogonal_projection])
def test_non_finite_memory_raises_or_poisons_never_skips(make):
    tx = make()
    g = _tree(G)
    bad = _tree(np.array([[np.nan, 0, 0, 0, 0, 0]]), (1,))
    with pytest.raises(ValueError, match="memory holds NaN or inf"):
        tx.update(g, tx.init(g), memory=bad)
    # inside jit it cannot raise: the update turns NaN (the loop then stops) instead of
    # passing through as if the constraint held
    new, state = jax.jit(tx.update)(g, tx.init(g), memory=bad)
    assert all(np.all(np.isnan(x)) for x in jax.tree.leaves(new))


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: shs.gem_projection(margin=float("nan")), "margin must be a finite number"),
        (lambda: shs.gem_projection(eps=float("inf")), "eps must be a finite number"),
        (lambda: shs.gem_projection(margin="0.5"), "margin must be a finite number"),
        (lambda: shs.orthogonal_projection(eps=float("nan")), "eps must be a finite number"),
    ],
)
def test_projection_refuses_non_finite_margin_and_eps(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


def test_forget_memory_refuses_a_non_finite_gradient_of_a_finite_loss():
    def loss(p, batch):  # finite at p = 0, its gradient is not
        return jnp.sum(jnp.sqrt(p["w"])) * batch["x"][0]

    params = {"w": jnp.zeros(3)}
    with pytest.raises(FloatingPointError, match="gradient of forget batch 0 holds NaN or inf"):
        shs.forget_memory(loss, params, [{"x": jnp.ones(1)}])


# ------------------------------------------------------------------- 3. masked_reinit

P3 = {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.ones(2)}
M3 = {"kernel": jnp.array([[True, False], [False, True], [True, True]]), "bias": jnp.ones(2, bool)}
F3 = {"kernel": jnp.full((3, 2), 7.0), "bias": jnp.full(2, 7.0)}
E3 = {"kernel": True, "bias": True}


@pytest.mark.parametrize(
    "mask, fresh, pattern",
    [
        (M3, {**F3, "kernel": jnp.full((1, 2), 7.0)}, "fresh values of 'kernel' .* shape"),
        (M3, {**F3, "kernel": jnp.full((3,), 7.0)}, "fresh values of 'kernel'"),
        ({**M3, "kernel": jnp.ones(2, bool)}, F3, "mask of 'kernel' must be a bool array"),
        ({**M3, "kernel": jnp.full((3, 2), 0.2)}, F3, "float mask is not read as True/False"),
        (M3, {"kernel": F3["kernel"]}, "`fresh` must have the structure of `params`"),
        ({**M3, "extra": jnp.ones(1, bool)}, F3, "unexpected \\['extra'\\]"),
    ],
)
def test_masked_reinit_refuses_trees_it_would_broadcast(mask, fresh, pattern):
    eager = functools.partial(shs.masked_reinit, eligible=E3)
    for reinit in (eager, jax.jit(eager)):  # the checks read shapes: they hold under jit
        with pytest.raises(ValueError, match=pattern):
            reinit(P3, mask, fresh)


def test_masked_reinit_refuses_integer_parameters_and_traced_eligibility():
    ints = {**P3, "kernel": jnp.arange(6).reshape(3, 2)}
    with pytest.raises(ValueError, match="'kernel' has dtype int32; only float"):
        shs.masked_reinit(ints, M3, F3, eligible=E3)
    out = shs.masked_reinit(ints, M3, F3, eligible={"kernel": False, "bias": True})
    np.testing.assert_array_equal(out["kernel"], ints["kernel"])  # not eligible: untouched
    with pytest.raises(ValueError, match="one Python bool per leaf"):
        shs.masked_reinit(P3, M3, F3, eligible={"kernel": "yes", "bias": True})


def test_masked_reinit_still_matches_where_on_good_trees():
    out = jax.jit(lambda p, m, f: shs.masked_reinit(p, m, f, eligible=E3))(P3, M3, F3)
    np.testing.assert_array_equal(out["kernel"], np.where(M3["kernel"], 7.0, P3["kernel"]))
    np.testing.assert_array_equal(out["bias"], [0.0, 0.0])  # selected biases become 0


# ------------------------------------------------------------------- 4. tied scores


def _stable_top(scores, sparsity):
    """Brute force: the last N - floor(sparsity N) entries of a stable sort of all
    scores in leaf order (equal scores: the later position ranks higher)."""
    leaves, treedef = jax.tree.flatten(scores)
    flat = np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in leaves])
    k = math.floor(sparsity * flat.size)
    chosen = np.zeros(flat.size, bool)
    chosen[np.argsort(flat, kind="stable")[k:]] = True
    out, start = [], 0
    for x in leaves:
        out.append(chosen[start : start + np.size(x)].reshape(np.shape(x)))
        start += np.size(x)
    return jax.tree.unflatten(treedef, out)


def _count(mask):
    return sum(int(np.sum(np.asarray(m))) for m in jax.tree.leaves(mask))


def _tied(seed, high):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": rng.integers(0, high, (3, 3, 2, 4)).astype(np.float32)},
        "dense": [rng.integers(0, high, (7, 5)).astype(np.float32), np.float32(high - 1)],
        "head": (jnp.asarray(rng.integers(0, high, (2, 3, 5)), jnp.bfloat16),),
    }


@pytest.mark.parametrize("method", ["host", "device"])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9, 0.97])
@pytest.mark.parametrize("seed, high", [(0, 1), (1, 2), (2, 6), (3, 60)])
def test_exact_ties_select_exactly_the_asked_count(seed, high, sparsity, method):
    scores = _tied(seed, high)  # high = 1: every score equal
    got = shs.top_k_mask(scores, sparsity, method=method, ties="exact")
    want = _stable_top(scores, sparsity)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)
    n = sum(np.size(x) for x in jax.tree.leaves(scores))
    assert _count(got) == n - math.floor(sparsity * n)


def test_release_ties_are_kept_behind_the_option_and_warn():
    scores = {"w": np.ones((10, 10), np.float32)}
    with pytest.warns(UserWarning, match="selects 100 of 100 entries .* asks for 3 "):
        mask = shs.top_k_mask(scores, 0.97, ties="release")
    assert _count(mask) == 100  # the release's behaviour, as it was
    assert _count(shs.top_k_mask(scores, 0.97, ties="exact")) == 3


def _flat_loss(p, batch):  # every gradient entry 1: with params 1 every saliency is equal
    return sum(jnp.sum(x) for x in jax.tree.leaves(p)) * jnp.mean(batch["x"])


def _trim(params, settings):
    return shs.trim(
        _flat_loss, params, lambda key: iter([{"x": jnp.ones(2)}]), key=jax.random.key(0),
        eligible=jax.tree.map(lambda _: True, params), fresh=jax.tree.map(jnp.zeros_like, params),
        settings=settings,
    )  # fmt: skip


def test_trim_of_tied_saliency_reinitialises_what_was_asked():
    params = {"a": {"kernel": jnp.ones((10, 6))}, "b": {"kernel": jnp.ones((40,))}}
    trimmed = _trim(params, shs.TrimSettings(sparsity=0.97))  # the default: ties="exact"
    assert _count(trimmed.mask) == 100 - 97  # 3 %, not 100 %
    want = _stable_top(jax.tree.map(np.ones_like, params), 0.97)
    np.testing.assert_array_equal(trimmed.mask["b"]["kernel"], want["b"]["kernel"])
    with pytest.warns(UserWarning, match="selects 100 of 100"):
        parity = _trim(params, shs.TrimSettings(sparsity=0.97, ties="release"))
    assert _count(parity.mask) == 100


@pytest.mark.parametrize("seed", range(3))
def test_untied_scores_select_the_same_either_way(seed):
    rng = np.random.default_rng(seed)
    params = {"a": jnp.asarray(rng.normal(size=(30, 7)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(55,)), jnp.float32)}  # fmt: skip

    def loss(p, batch):
        return sum(jnp.sum(jnp.sin(x * batch["x"][0])) for x in jax.tree.leaves(p))

    out = {}
    for ties in ("exact", "release"):
        out[ties] = shs.trim(
            loss, params, lambda key: iter([{"x": jnp.full(1, 1.3)}]), key=jax.random.key(seed),
            eligible={"a": True, "b": True}, fresh=jax.tree.map(jnp.zeros_like, params),
            settings=shs.TrimSettings(sparsity=0.9, ties=ties),
        )  # fmt: skip
    for a, b in zip(jax.tree.leaves(out["exact"]), jax.tree.leaves(out["release"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _count(out["exact"].mask) == 265 - math.floor(0.9 * 265)


# ------------------------------------------------------------------- 5. data and inputs


@pytest.fixture(scope="module")
def tiny():
    model = shs.linen_model(shs.DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))
    params, state = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {
        "image": rng.normal(size=(40, 8, 8, 1)).astype(np.float32),
        "label": rng.integers(0, 10, 40).astype(np.int32),
    }
    retain = {k: v[:30] for k, v in data.items()}
    forget = {k: v[30:] for k, v in data.items()}
    return model, params, state, retain, forget


def _unlearn(tiny, **kw):
    model, params, state, retain, forget = tiny
    args = dict(retain=retain, forget=forget, key=jax.random.key(1),
                repair=shs.RepairSettings(epochs=1),
                training=shs.TrainingSettings(batch_size=8, progress=False))  # fmt: skip
    args.update(kw)
    params = args.pop("params", params)
    return shs.scissorhands(model, params, state, **args)


def _with(data, key, value):
    return {**data, key: value}


def _nan_image(data, row):
    image = data["image"].copy()
    image[row, 3, 3, 0] = np.nan
    return _with(data, "image", image)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda r, f: dict(retain=_nan_image(r, 7)), r"retain data holds NaN or inf in \['image'\] "
                                                     r"\(examples \[7\]"),
        (lambda r, f: dict(forget=_nan_image(f, 2)), "forget data holds NaN or inf"),
        (lambda r, f: dict(forget=_with(f, "label", f["label"] + 10)), r"outside \[0, 10\)"),
        (lambda r, f: dict(retain=_with(r, "label", -r["label"] - 1)), r"outside \[0, 10\)"),
        (lambda r, f: dict(retain=_with(r, "label", r["label"].astype(np.float32))),
         "integer class indices"),
        (lambda r, f: dict(forget={"image": f["image"]}), "forget data has no 'label' entry"),
        (lambda r, f: dict(retain={"x": r["image"], "label": r["label"]}),
         "retain data has no 'image' entry"),
    ],
)  # fmt: skip
def test_bad_data_is_named_before_any_work(tiny, change, pattern):
    _, _, _, retain, forget = tiny
    with pytest.raises(ValueError, match=pattern):
        _unlearn(tiny, **change(retain, forget))


def test_a_source_is_checked_on_its_first_batch(tiny):
    _, _, _, retain, forget = tiny
    bad = _with(forget, "label", forget["label"].astype(np.float32))
    source = shs.data.array_source(bad, 4)
    with pytest.raises(ValueError, match="first forget batch: the labels 'label' have dtype"):
        _unlearn(tiny, forget=source)


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(eligible=5), "eligible must be None, a regex or preset name"),
        (dict(eligible="("), r"'\(' is not a valid regular expression"),
        (dict(eligible=shs.Eligibility({"a": True}, {"a": True})), "Eligibility.reinit must"),
    ],
)
def test_bad_eligible_is_named(tiny, kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _unlearn(tiny, **kw)


def test_integer_params_are_named(tiny):
    _, params, *_ = tiny
    ints = jax.tree.map(lambda x: x.astype(jnp.int32), params)
    with pytest.raises(ValueError, match=r"params: leaf \['Conv_0'\]\['bias'\] has dtype int32"):
        _unlearn(tiny, params=ints)


def test_zero_d_jax_sparsity_is_accepted(tiny):
    got = _unlearn(tiny, trim=shs.TrimSettings(sparsity=jnp.asarray(0.9)),
                   repair=shs.RepairSettings(epochs=0))  # fmt: skip
    n = sum(np.size(x) for x in jax.tree.leaves(tiny[1]))  # every leaf is eligible
    assert got.log[0]["reinitialised"] == n - math.floor(float(np.float32(0.9)) * n)
    scores = {"a": jnp.arange(10.0)}
    assert _count(shs.top_k_mask(scores, jnp.float32(0.8))) == 2
