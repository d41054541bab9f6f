"""Tests for the GEM and orthogonal projections against independent NumPy/SciPy references.

References are computed in float64 from the float32 inputs the library sees: the t = 1
closed form, a bounded least-squares solve of the same dual QP (SciPy BVLS on the Cholesky
factor), a brute-force KKT enumeration, ``numpy.linalg.lstsq`` for the orthogonal
complement, and a hand-written projection -> weight decay -> momentum SGD step.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import lsq_linear, nnls

import scissorhands_jax as shs
from scissorhands_jax import _qp

SHAPES = {"kernel": (3, 4), "bias": (5,)}  # leaves flatten as [bias, kernel]
P = 17  # total number of entries


# ----------------------------------------------------------------------------- helpers


def _tree(flat, lead=()):
    """Splits a flat float64 vector (or a (t, P) matrix) into a float32 tree like SHAPES."""
    out, start = {}, 0
    for name in sorted(SHAPES):
        shape = SHAPES[name]
        size = int(np.prod(shape))
        piece = flat[..., start : start + size]
        out[name] = jnp.asarray(piece.reshape(*lead, *shape), jnp.float32)
        start += size
    return out


def _flat(tree, lead=0):
    """Concatenates a tree's leaves in float64 (keeping ``lead`` leading axes)."""
    leaves = jax.tree.leaves(tree)
    return np.concatenate(
        [np.asarray(x, np.float64).reshape(*x.shape[:lead], -1) for x in leaves], axis=-1
    )


def _f32(x):
    """The float64 value of x rounded to float32, so references see what the library sees."""
    return np.asarray(np.asarray(x, np.float32), np.float64)


def _objective(h, b, v):
    return 0.5 * v @ h @ v + b @ v


def _scipy_dual(h, b, margin):
    """min 1/2 v'Hv + b'v s.t. v >= margin, as min 1/2 ||L'v + L^-1 b||^2 (H = LL')."""
    chol = np.linalg.cholesky(h)
    res = lsq_linear(
        chol.T, -np.linalg.solve(chol, b), bounds=(margin, np.inf), method="bvls", tol=1e-14
    )
    return res.x


def _brute_dual(h, b, margin):
    """The unique KKT point of the strictly convex QP, by trying every free set in float64."""
    t = len(b)
    scale = np.abs(h).max() + np.abs(b).max() + 1e-300
    for free in itertools.product([False, True], repeat=t):
        f = np.array(free)
        v = np.full(t, float(margin))
        if f.any():
            a = ~f
            v[f] = np.linalg.solve(h[np.ix_(f, f)], -(b[f] + h[np.ix_(f, a)] @ v[a]))
        grad = h @ v + b
        if np.all(v[f] >= margin) and np.all(grad[~f] >= -1e-10 * scale):
            return v
    raise AssertionError("no KKT point found")  # impossible for positive definite h


def _assert_kkt(h, b, v, margin, v_scale, rtol=1e-4):
    """v >= margin, Hv + b >= 0 and (v - margin) * (Hv + b) = 0, all within rtol of scale."""
    v = np.asarray(v, np.float64)
    grad = h @ v + b
    g_scale = np.abs(h).max() * v_scale * len(b) + np.abs(b).max()
    assert np.all(v >= margin - rtol * v_scale), (v, margin)
    assert np.all(grad >= -rtol * g_scale), (grad, g_scale)
    np.testing.assert_array_less(np.abs((v - margin) * grad), rtol * v_scale * g_scale + 1e-30)


def _memories(rng, t, kind):
    """(t, P) float64 memories of a given kind, rounded to float32."""
    m = rng.normal(size=(t, P))
    if kind == "near_parallel":
        m[1] = m[0] + 1e-4 * rng.normal(size=P)
    elif kind == "zero_memory":
        m[t - 1] = 0.0
    elif kind == "large_norm":
        m *= 10.0 ** rng.uniform(1.0, 3.0, size=(t, 1))
    return _f32(m)


def _conflicting_g(rng, m):
    """A random update that conflicts with at least the first memory."""
    g = rng.normal(size=P)
    if m[0] @ g >= 0:
        g -= 2.0 * (m[0] @ g) / (m[0] @ m[0]) * m[0] + 0.1 * m[0] / np.linalg.norm(m[0])
    g = _f32(g)
    assert m[0] @ g < 0
    return g


def _apply(tx, g, m, state=None):
    """Runs one update of ``tx`` on flat g (P,) and memory (t, P); returns flat g~, state."""
    t = m.shape[0]
    state = tx.init(_tree(g)) if state is None else state
    out, state = tx.update(_tree(g), state, memory=_tree(m, lead=(t,)))
    return _flat(out), state


@functools.cache
def _jit_gem(margin, eps):
    """One jitted GEM update per setting (compiled once per t), returning (g~, state)."""
    tx = shs.gem_projection(margin=margin, eps=eps)
    return jax.jit(lambda g, mem: tx.update(g, tx.init(g), memory=mem))


# margin is traced, so one compilation per t serves every margin
_jit_solve_dual = jax.jit(_qp.solve_dual)


def _solve_dual(h, b, margin):
    """The library's dual solution for float64 (h, b), fed to it in float32."""
    v = _jit_solve_dual(jnp.asarray(h, jnp.float32), jnp.asarray(b, jnp.float32), margin)
    return np.asarray(v, np.float64)


# ----------------------------------------------------------------------------- GEM, t = 1


@pytest.mark.parametrize("margin", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_gem_t1_matches_closed_form(seed, margin):
    rng = np.random.default_rng(seed)
    eps = 1e-3
    m = _memories(rng, 1, "large_norm" if seed == 3 else "random")
    g = _conflicting_g(rng, m)
    v = max(margin, -(g @ m[0]) / (m[0] @ m[0] + eps))
    want = g + v * m[0]

    got, state = _apply(shs.gem_projection(margin=margin, eps=eps), g, m)

    scale = np.linalg.norm(g) + v * np.linalg.norm(m[0])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    assert int(state.count) == 1 and int(state.projected) == 1


def test_gem_t1_docstring_example():
    tx = shs.gem_projection(margin=0.0, eps=0.0)
    g = {"w": jnp.array([1.0, 0.0])}
    new, _ = tx.update(g, tx.init(g), memory={"w": jnp.array([[-1.0, 1.0]])})
    np.testing.assert_allclose(np.asarray(new["w"]), [0.5, 0.5], rtol=1e-6)


# ----------------------------------------------------------------------------- GEM, t = 2..5


KINDS = ["random", "near_parallel", "zero_memory", "large_norm"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [2, 3, 4, 5])
@pytest.mark.parametrize("margin", [0.5, 0.0])
def test_gem_matches_scipy_qp(t, kind, margin):
    rng = np.random.default_rng(100 * t + KINDS.index(kind) + (7 if margin else 0))
    eps = 1e-3
    m = _memories(rng, t, kind)
    g = _conflicting_g(rng, m)
    h = m @ m.T + eps * np.eye(t)
    b = m @ g
    v_ref = _scipy_dual(h, b, margin)
    want = g + m.T @ v_ref

    out, state = _jit_gem(margin, eps)(_tree(g), _tree(m, lead=(t,)))
    got = _flat(out)
    v_lib = _solve_dual(h, b, margin)

    scale = np.linalg.norm(g) + np.linalg.norm(m.T @ v_ref)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    f_ref, f_lib = _objective(h, b, v_ref), _objective(h, b, v_lib)
    assert f_lib <= f_ref + 1e-4 * abs(f_ref) + 1e-12, (f_lib, f_ref)
    v_scale = max(np.abs(v_ref).max(), margin, 1e-12)
    _assert_kkt(h, b, v_lib, margin, v_scale, rtol=1e-3 if kind == "near_parallel" else 1e-4)
    if kind != "near_parallel":  # v itself is only determined well when H is well-conditioned
        np.testing.assert_allclose(v_lib, v_ref, rtol=0, atol=1e-4 * v_scale)
    assert int(state.projected) == 1


@pytest.mark.parametrize("variant", ["large_memory", "small_update"])
def test_gem_exact_solver_feasibility_tolerance_is_scale_free(variant):
    """The QP is homogeneous: scaling g by c scales v by c. With margin = 0 and v ~ 1e-5
    (``||g|| / ||m|| ~ 1e-5``) the solution must still be the QP optimum.

    Optimum: v = (1e-5, 0) in the first variant, so g~ = (0, g_1) and <g~, m_1> = 0. The
    all-free candidate (8e-6, -4e-6) is infeasible but lies within the solver's absolute
    1e-5 feasibility slack, is chosen for its lower objective and clipped to (8e-6, 0), which
    leaves <g~, m_1> < 0: the projected step still lowers the forget loss to first order.
    """
    u = np.array([[1.0, 0.0], [-0.5, np.sqrt(0.75)]])  # unit memories, <u_1, u_2> = -1/2
    g = np.array([-1.0, 0.3 / np.sqrt(0.75)])  # <g, u_1> = -1, <g, u_2> = 0.8
    if variant == "large_memory":
        m, eps = _f32(1e5 * u), 1e-3
    else:
        m, g, eps = _f32(u), 1e-5 * g, 0.0
    g = _f32(g)
    h = m @ m.T + eps * np.eye(2)
    v_ref = _brute_dual(h, m @ g, 0.0)
    np.testing.assert_allclose(v_ref / np.abs(v_ref).max(), [1.0, 0.0], atol=1e-6)
    want = g + m.T @ v_ref

    tx = shs.gem_projection(margin=0.0, eps=eps)
    got = _flat(
        tx.update(
            {"w": jnp.asarray(g, jnp.float32)},
            tx.init(None),
            memory={"w": jnp.asarray(m, jnp.float32)},
        )[0]
    )

    dots = m @ got / np.linalg.norm(m, axis=1)
    assert np.all(dots >= -1e-3 * np.linalg.norm(g)), dots
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.linalg.norm(g))


# ----------------------------------------------------------------------------- the dual solver


@pytest.mark.parametrize("margin", [0.5, 0.0, 2.0])
@pytest.mark.parametrize("t", [1, 2, 3, 6, 10])
def test_solve_dual_exact_matches_brute_force(t, margin):
    rng = np.random.default_rng(t + int(31 * margin))
    m = rng.normal(size=(t, 3 * t))
    h = _f32(m @ m.T + 1e-3 * np.eye(t))
    b = _f32(rng.normal(size=t) * 3.0)
    v_ref = _brute_dual(h, b, margin)
    np.testing.assert_allclose(v_ref, _scipy_dual(h, b, margin), atol=1e-8)

    v = _solve_dual(h, b, margin)

    v_scale = max(np.abs(v_ref).max(), abs(margin), 1e-12)
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-4 * v_scale)
    _assert_kkt(h, b, v, margin, v_scale)


@pytest.mark.parametrize("correlated", [False, True], ids=["random", "correlated"])
@pytest.mark.parametrize("margin", [0.5, 0.0])
@pytest.mark.parametrize("t", [11, 12])
def test_solve_dual_iterative_matches_scipy(t, margin, correlated):
    """t > MAX_EXACT_T goes through FISTA; correlated memories (a shared direction plus a
    little noise, as gradients of several forget batches are) make H ill-conditioned."""
    assert t > _qp.MAX_EXACT_T
    rng = np.random.default_rng(1000 + t + int(10 * margin) + 100 * correlated)
    if correlated:
        common = rng.normal(size=200)
        m = common + 0.03 * rng.normal(size=(t, 200))
        g = rng.normal(size=200) - 150.0 * common / np.linalg.norm(common)
    else:
        m = rng.normal(size=(t, 40))
        g = rng.normal(size=40)
        g -= 20.0 * m[0] / np.linalg.norm(m[0])  # some conflicts, some free coordinates
    h = _f32(m @ m.T + 1e-3 * np.eye(t))
    b = _f32(m @ g)
    v_ref = _scipy_dual(h, b, margin)
    assert np.any(v_ref > margin + 1e-6)
    assert np.linalg.cond(h) > 1e4 if correlated else np.linalg.cond(h) < 100

    v = _solve_dual(h, b, margin)

    f_ref, f = _objective(h, b, v_ref), _objective(h, b, v)
    assert f <= f_ref + 1e-4 * abs(f_ref), (f, f_ref)
    v_scale = max(np.abs(v_ref).max(), margin)
    _assert_kkt(h, b, v, margin, v_scale, rtol=1e-3)
    if not correlated:  # v is only well determined when H is well-conditioned
        np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-3 * v_scale)
    # what matters downstream, g~ = g + M'v, is well determined either way
    scale = np.linalg.norm(g) + np.linalg.norm(m.T @ v_ref)
    np.testing.assert_allclose(g + m.T @ v, g + m.T @ v_ref, rtol=0, atol=1e-3 * scale)


# ----------------------------------------------------------------------------- conflict logic


@pytest.mark.parametrize(
    "make", [shs.gem_projection, lambda: shs.orthogonal_projection(only_on_conflict=True)]
)
def test_no_conflict_passes_through_and_counters(make):
    rng = np.random.default_rng(5)
    tx = make()
    m = _memories(rng, 3, "random")
    # g with <g, m_i> > 0 for all i: a positive combination of the memories plus noise
    g = _f32(m.T @ np.array([1.0, 2.0, 0.5]) + 0.01 * rng.normal(size=P))
    assert np.all(m @ g > 0)
    state = tx.init(_tree(g))

    out, state = tx.update(_tree(g), state, memory=_tree(m, lead=(3,)))
    for k in SHAPES:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(_tree(g)[k]))
    assert (int(state.count), int(state.projected)) == (1, 0)

    g_bad = _conflicting_g(rng, m)
    out, state = tx.update(_tree(g_bad), state, memory=_tree(m, lead=(3,)))
    assert not np.allclose(_flat(out), g_bad)
    assert (int(state.count), int(state.projected)) == (2, 1)

    out, state2 = tx.update(_tree(g_bad), state, memory=None)  # a retain-only step
    np.testing.assert_array_equal(_flat(out), g_bad)
    assert (int(state2.count), int(state2.projected)) == (2, 1)
    assert jax.tree.structure(state2) == jax.tree.structure(tx.init(_tree(g)))
    assert isinstance(state2, shs.ProjectionState)


def test_orthogonal_always_projects_and_counts():
    rng = np.random.default_rng(6)
    tx = shs.orthogonal_projection()
    m = _memories(rng, 2, "random")
    g = _f32(m.T @ np.array([1.0, 1.0]) + rng.normal(size=P))
    assert np.all(m @ g > 0)  # no conflict, still projected
    out, state = _apply(tx, g, m)
    assert (int(state.count), int(state.projected)) == (1, 1)
    assert not np.allclose(out, g)


def _linear_problem(rng, n=12):
    """Linear regression params {"kernel": (3, 4), "bias": (4,)}, its loss and a batch maker."""
    params = {
        "kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
    }
    w_true = rng.normal(size=(3, 4))

    def loss_fn(p, batch):
        x, y = batch
        return jnp.mean((x @ p["kernel"] + p["bias"] - y) ** 2)

    def batch(noise):
        x = rng.normal(size=(n, 3))
        y = x @ w_true + noise * rng.normal(size=(n, 4))
        return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    return params, loss_fn, batch


@pytest.mark.parametrize("margin", [0.0, 0.5])
@pytest.mark.parametrize("t", [1, 3])
def test_gem_step_does_not_lower_forget_loss_to_first_order(t, margin):
    rng = np.random.default_rng(40 + t)
    params, loss_fn, batch = _linear_problem(rng)
    forget = [batch(3.0) for _ in range(t)]
    retain = batch(0.1)
    memory = shs.forget_memory(loss_fn, params, forget)
    # an update that learns the forget data back: it conflicts with every memory
    g = jax.grad(lambda p: loss_fn(p, retain) + sum(loss_fn(p, b) for b in forget))(params)
    m = _flat(memory, lead=1)
    assert np.all(m @ _flat(g) < 0)

    eps = 1e-3
    tx = shs.gem_projection(margin=margin, eps=eps)
    out, _ = tx.update(g, tx.init(params), memory=memory)
    gt = _flat(out)

    # <g~, m_i> = (Hv + b)_i - eps v_i >= -eps v_i by the KKT conditions of the dual QP
    v_ref = _scipy_dual(m @ m.T + eps * np.eye(t), m @ _flat(g), margin)
    tol = eps * v_ref + 1e-5 * np.linalg.norm(_flat(g)) * np.linalg.norm(m, axis=1)
    dots = m @ gt
    assert np.all(dots >= -tol), (dots, tol)
    # the same as a directional derivative of each forget loss along the step -g~
    step = jax.tree.map(jnp.negative, out)
    for i, b in enumerate(forget):
        _, slope = jax.jvp(lambda p, b=b: loss_fn(p, b), (params,), (step,))
        assert float(slope) >= -tol[i], (i, float(slope))


# ----------------------------------------------------------------------------- orthogonal


@pytest.mark.parametrize("t", [1, 2, 4])
def test_orthogonal_matches_formula_and_is_orthogonal(t):
    rng = np.random.default_rng(70 + t)
    eps = 1e-6
    m = _memories(rng, t, "random")
    g = _conflicting_g(rng, m)
    want = g - m.T @ np.linalg.solve(m @ m.T + eps * np.eye(t), m @ g)

    got, _ = _apply(shs.orthogonal_projection(eps=eps), g, m)

    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.linalg.norm(g))
    dots = m @ got
    np.testing.assert_array_less(np.abs(dots), 1e-4 * np.linalg.norm(g) * np.linalg.norm(m, axis=1))


@pytest.mark.parametrize("t", [1, 3, 5])
def test_orthogonal_eps0_is_least_squares_complement(t):
    rng = np.random.default_rng(80 + t)
    m = _memories(rng, t, "random")
    g = _f32(rng.normal(size=P))
    coef, *_ = np.linalg.lstsq(m.T, g, rcond=None)
    want = g - m.T @ coef

    got, _ = _apply(shs.orthogonal_projection(eps=0.0), g, m)

    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.linalg.norm(g))
    np.testing.assert_array_less(np.abs(m @ got), 1e-5 * np.linalg.norm(g) * np.linalg.norm(m))


def test_orthogonal_with_ridge_and_large_eps():
    """eps enters as a ridge: with eps comparable to ||m||^2 the update only partly turns."""
    rng = np.random.default_rng(9)
    m = _memories(rng, 2, "random")
    g = _conflicting_g(rng, m)
    eps = float(np.trace(m @ m.T))
    want = g - m.T @ np.linalg.solve(m @ m.T + eps * np.eye(2), m @ g)
    got, _ = _apply(shs.orthogonal_projection(eps=eps), g, m)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.linalg.norm(g))


# ----------------------------------------------------------------------------- jit and chain


@pytest.mark.parametrize(
    "make", [shs.gem_projection, shs.orthogonal_projection], ids=["gem", "orthogonal"]
)
def test_jit_matches_eager_without_retrace(make):
    rng = np.random.default_rng(11)
    tx = make()
    m = _memories(rng, 3, "random")
    traces = []

    def step(u, s, mem):
        traces.append(1)
        return tx.update(u, s, memory=mem)

    jitted = jax.jit(step)
    state = tx.init(_tree(np.zeros(P)))
    eager_state = state
    for _ in range(3):
        g = _conflicting_g(rng, m)
        out, state = jitted(_tree(g), state, _tree(m, lead=(3,)))
        ref, eager_state = tx.update(_tree(g), eager_state, memory=_tree(m, lead=(3,)))
        np.testing.assert_allclose(_flat(out), _flat(ref), rtol=1e-5, atol=1e-6)
        for k in SHAPES:
            assert out[k].shape == SHAPES[k] and out[k].dtype == jnp.float32
    assert len(traces) == 1
    assert (int(state.count), int(state.projected)) == (3, 3)
    assert state.count.dtype == jnp.int32


def test_chain_with_weight_decay_and_momentum_sgd_matches_numpy():
    rng = np.random.default_rng(12)
    lr, mom, wd, margin, eps = 0.1, 0.9, 5e-4, 0.5, 1e-3
    tx = optax.chain(
        shs.gem_projection(margin=margin, eps=eps),
        optax.add_decayed_weights(wd),
        optax.sgd(lr, momentum=mom),
    )
    params = _f32(rng.normal(size=P))
    m1 = _memories(rng, 1, "random")
    steps = [  # (gradient, memory): a conflict, no conflict, no memory
        (_conflicting_g(rng, m1), m1),
        (_f32(m1[0] * 0.3 + 0.01 * rng.normal(size=P)), m1),
        (_f32(rng.normal(size=P)), None),
    ]
    assert steps[1][0] @ m1[0] > 0

    @jax.jit
    def update(g, state, p, mem):
        return tx.update(g, state, p, memory=mem)

    state = tx.init(_tree(params))
    p_np, trace = params.copy(), np.zeros(P)
    p_jax = _tree(params)
    for g, mem in steps:
        # hand computation: GEM (t = 1 closed form) -> + wd * p -> momentum SGD
        gt = g
        if mem is not None and mem[0] @ g < 0:
            v = max(margin, -(g @ mem[0]) / (mem[0] @ mem[0] + eps))
            gt = g + v * mem[0]
        trace = gt + wd * p_np + mom * trace
        p_np = p_np - lr * trace

        mem_tree = None if mem is None else _tree(mem, lead=(1,))
        upd, state = update(_tree(g), state, p_jax, mem_tree)
        p_jax = optax.apply_updates(p_jax, upd)
        np.testing.assert_allclose(_flat(p_jax), p_np, rtol=1e-5, atol=1e-6)
    gem_state = state[0]
    assert (int(gem_state.count), int(gem_state.projected)) == (2, 1)


# ----------------------------------------------------------------------------- masks


def _masks():
    tree = {"kernel": True, "bias": False}
    return [("tree", tree), ("callable", lambda u: jax.tree.map(lambda x: x.ndim == 2, u))]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("mask_kind", ["tree", "callable"])
@pytest.mark.parametrize("method", ["gem", "orthogonal"])
def test_mask_restricts_projection_and_ignores_unselected_memory(method, mask_kind, jit):
    rng = np.random.default_rng(13)
    mask = dict(_masks())[mask_kind]
    eps = 1e-3
    t = 2
    g = {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=(5,))}
    mk = rng.normal(size=(t, 3, 4))
    mk[0] -= 2.0 * np.sum(mk[0] * g["kernel"]) / np.sum(mk[0] ** 2) * mk[0]  # a conflict on kernel
    g = {k: _f32(v) for k, v in g.items()}
    mk = _f32(mk)
    memory = {"kernel": jnp.asarray(mk, jnp.float32), "bias": jnp.full((t, 5), jnp.nan)}

    if method == "gem":
        tx = shs.gem_projection(eps=eps, eligible=mask)
    else:
        tx = shs.orthogonal_projection(eps=eps, eligible=mask)
    update = (
        jax.jit(lambda u, s, mem: tx.update(u, s, memory=mem))
        if jit
        else (lambda u, s, mem: tx.update(u, s, memory=mem))
    )
    gt = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
    out, state = update(gt, tx.init(gt), memory)

    np.testing.assert_array_equal(np.asarray(out["bias"]), np.asarray(gt["bias"]))
    m = mk.reshape(t, -1)
    gk = g["kernel"].reshape(-1)
    h, b = m @ m.T + eps * np.eye(t), m @ gk
    if method == "gem":
        want = gk + m.T @ _scipy_dual(h, b, 0.5)
    else:
        want = gk - m.T @ np.linalg.solve(h, b)
    got = np.asarray(out["kernel"], np.float64).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.linalg.norm(want))
    assert np.all(np.isfinite(got))
    assert int(state.projected) == 1


@pytest.mark.parametrize("method", ["gem", "orthogonal_on_conflict"])
def test_mask_conflict_uses_only_selected_leaves(method):
    """Conflict on an unselected leaf is ignored; conflict on a selected one is seen even if
    the full inner product is positive."""
    mask = {"kernel": True, "bias": False}
    if method == "gem":
        tx = shs.gem_projection(eligible=mask)
    else:
        tx = shs.orthogonal_projection(only_on_conflict=True, eligible=mask)
    g = {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((5,))}
    # selected part agrees (+12), unselected part disagrees strongly (-50)
    mem = {"kernel": jnp.ones((1, 3, 4)), "bias": -10.0 * jnp.ones((1, 5))}
    out, state = tx.update(g, tx.init(g), memory=mem)
    for k in g:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(g[k]))
    assert int(state.projected) == 0

    # selected part disagrees (-12), unselected part agrees strongly (+50)
    mem = {"kernel": -jnp.ones((1, 3, 4)), "bias": 10.0 * jnp.ones((1, 5))}
    out, state = tx.update(g, tx.init(g), memory=mem)
    assert int(state.projected) == 1
    np.testing.assert_array_equal(np.asarray(out["bias"]), np.asarray(g["bias"]))
    m, gk = -np.ones(12), np.ones(12)
    if method == "gem":
        v = max(0.5, -(gk @ m) / (m @ m + 1e-3))
        want = gk + v * m
    else:
        want = gk - m * (m @ gk) / (m @ m + 1e-3)
    np.testing.assert_allclose(np.asarray(out["kernel"]).reshape(-1), want, rtol=1e-5, atol=1e-6)


def test_mask_selecting_nothing_raises():
    tx = shs.gem_projection(eligible={"kernel": False, "bias": False})
    g = _tree(np.ones(P))
    with pytest.raises(ValueError, match="selects no leaf"):
        tx.update(g, tx.init(g), memory=_tree(np.ones((1, P)), lead=(1,)))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [shs.gem_projection, shs.orthogonal_projection])
def test_bad_memory_raises(make):
    tx = make()
    g = _tree(np.ones(P))
    state = tx.init(g)
    good = _tree(np.ones((2, P)), lead=(2,))

    with pytest.raises(ValueError, match="structure"):
        tx.update(g, state, memory={"kernel": good["kernel"]})
    with pytest.raises(ValueError, match="structure"):
        tx.update(g, state, memory=[good["bias"], good["kernel"]])
    with pytest.raises(ValueError, match=r"memory leaf of shape \(2, 4, 3\)"):
        tx.update(g, state, memory={**good, "kernel": jnp.ones((2, 4, 3))})
    with pytest.raises(ValueError, match=r"memory leaf of shape \(3, 4\)"):  # no leading axis
        tx.update(g, state, memory={**good, "kernel": jnp.ones((3, 4))})
    with pytest.raises(ValueError, match=r"number of memories t: \[2, 3\]"):
        tx.update(g, state, memory={**good, "kernel": jnp.ones((3, 3, 4))})
    with pytest.raises(ValueError, match="number of memories"):
        tx.update(g, state, memory=_tree(np.ones((0, P)), lead=(0,)))


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="margin and eps"):
        shs.gem_projection(margin=-0.1)
    with pytest.raises(ValueError, match="margin and eps"):
        shs.gem_projection(eps=-1e-3)
    with pytest.raises(ValueError, match="eps"):
        shs.orthogonal_projection(eps=-1.0)


# ------------------------ rank-deficient and non-finite memories, bad trees and settings


G6 = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0], np.float64)


ROWS = {
    "zero": [[0, 0, 0, 0, 0, 0]],
    "zero_and_one": [[0, 0, 0, 0, 0, 0], [-1, 2, 0, 1, 0, 0]],
    "duplicates": [[-1, 2, 0, 1, 0, 0], [-1, 2, 0, 1, 0, 0]],
    "scaled": [[-1, 2, 0, 1, 0, 0], [-3, 6, 0, 3, 0, 0]],
    "opposite": [[-1, 2, 0, 1, 0, 0], [1, -2, 0, -1, 0, 0]],
    "dependent": [[-1, 2, 0, 1, 0, 0], [0, 0, -1, 0, 1, 1], [-1, 2, -1, 1, 1, 1]],
}


def _two_leaf_tree(vec, lead=()):
    """A two-leaf tree (``a``: 2 x 2, ``b``: 2) from a flat vector (or rows of them)."""
    vec = np.asarray(vec, np.float32)
    return {"a": vec[..., :4].reshape(*lead, 2, 2), "b": vec[..., 4:].reshape(*lead, 2)}


def _two_leaf_flat(tree):
    return np.concatenate([np.ravel(tree["a"]), np.ravel(tree["b"])]).astype(np.float64)


@pytest.mark.parametrize("rows", list(ROWS))
def test_orthogonal_eps0_handles_rank_deficient_memories(rows):
    m = np.asarray(ROWS[rows], np.float64)
    tx = shs.orthogonal_projection(eps=0.0)
    g = _two_leaf_tree(G6)
    got = _two_leaf_flat(tx.update(g, tx.init(g), memory=_two_leaf_tree(m, (len(m),)))[0])
    coef = np.linalg.lstsq(m.T, G6, rcond=None)[0]  # the least-squares reference
    want = G6 - m.T @ coef
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
    g = _two_leaf_tree(G6)
    for update in (tx.update, jax.jit(tx.update)):
        got = _two_leaf_flat(update(g, tx.init(g), memory=_two_leaf_tree(m, (len(m),)))[0])
        np.testing.assert_allclose(got, _gem_reference(m, G6, margin), rtol=1e-4, atol=1e-4)


def test_gem_eps0_many_memories_with_zero_rows():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(12, 6))
    m[[2, 7]] = 0.0  # t = 12 > 10: the iterative solver
    m[5] = m[4]
    tx = shs.gem_projection(margin=0.0, eps=0.0)
    g = _two_leaf_tree(G6)
    got = _two_leaf_flat(tx.update(g, tx.init(g), memory=_two_leaf_tree(m, (12,)))[0])
    np.testing.assert_allclose(got, _gem_reference(m, G6, 0.0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("make", [shs.gem_projection, shs.orthogonal_projection])
def test_non_finite_memory_raises_or_poisons_never_skips(make):
    tx = make()
    g = _two_leaf_tree(G6)
    bad = _two_leaf_tree(np.array([[np.nan, 0, 0, 0, 0, 0]]), (1,))
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


def test_memory_mismatch_in_projection():
    tx = shs.gem_projection()
    g = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = tx.init(g)
    with pytest.raises(ValueError, match="structure"):
        tx.update(g, state, memory={"a": jnp.ones((1, 3))})
    with pytest.raises(ValueError, match="does not match"):
        tx.update(g, state, memory={"a": jnp.ones((1, 4)), "b": jnp.ones((1, 2, 2))})
    with pytest.raises(ValueError, match="disagree on the number of memories"):
        tx.update(g, state, memory={"a": jnp.ones((1, 3)), "b": jnp.ones((2, 2, 2))})
