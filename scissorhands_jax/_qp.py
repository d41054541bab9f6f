"""The small dual QP of GEM, solved on the device.

    minimise   f(v) = 1/2 v^T H v + b^T v     subject to   v >= margin (elementwise)

with H = M M^T + eps I (t x t, positive definite for eps > 0) and b = M g. With eps = 0
H is only positive semi-definite (a zero memory, two equal ones): ``singular=True``
solves each face for its least-norm point. The objective is constant along the null
space of H (b = M g is orthogonal to it), so the optimum still exists, and the update
g + M^T v it gives is unique even where v is not.

The solvers' products run at full float32 precision (``jax.default_matmul_precision``):
the default on NVIDIA GPUs rounds float32 matrix products to TF32 (10-bit mantissa),
which moves the solution by about 1e-4 of its scale, more than the QP's own accuracy.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

MAX_EXACT_T = 10
"""Up to this many memories the QP is solved exactly by enumerating active sets."""


def _subsets(t: int) -> np.ndarray:
    """All 2**t free-set indicators as a (2**t, t) float array (row 0: nothing free)."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=t)), dtype=np.float32)


@jax.default_matmul_precision("highest")
def solve_exact(h: jax.Array, b: jax.Array, margin: float, singular: bool = False) -> jax.Array:
    """Exact minimiser by enumeration of the free set.

    For each subset F of free coordinates, fix v_A = margin on the rest and solve the
    equality-constrained problem H_FF v_F = -(b_F + H_FA margin). The optimum is one of
    these candidates (its own free set gives it), every feasible candidate is a feasible
    point, so the feasible candidate of least objective is the optimum. The all-bound
    candidate v = margin is always feasible, so a solution always exists. Cost:
    2**t solves of t x t systems, batched.

    With ``singular`` (H only semi-definite) each face is solved by the pseudo-inverse
    of H scaled to a unit largest diagonal: its least-norm point, a true minimiser on
    the face (the system is consistent), so a feasible one is still a feasible point of
    its true objective; and some optimum has a free set whose rows of M are independent
    (move along a null direction until a coordinate reaches the bound), whose face
    system is regular, so the enumeration still finds the optimum.
    """
    t = h.shape[0]
    free = jnp.asarray(_subsets(t), dtype=h.dtype)  # (S, t)
    eye = jnp.eye(t, dtype=h.dtype)
    m_vec = jnp.full((t,), margin, dtype=h.dtype)
    diag = jnp.diag(h)
    if singular:  # the minimiser is the same for (h, b) / d: the bound rows stay at scale 1
        d = jnp.max(diag)
        d = jnp.where(d > 0, d, 1.0)
        h, b = h / d, b / d

    def candidate(f):
        bound = (1 - f) * m_vec
        k = f[:, None] * h * f[None, :] + jnp.diag(1 - f) * eye
        rhs = f * (-(b + h @ bound)) + bound
        if singular:
            return jnp.linalg.pinv(k, hermitian=True) @ rhs
        return jnp.linalg.solve(k, rhs)

    v = jax.vmap(candidate)(free)  # (S, t)
    objective = 0.5 * jnp.einsum("si,ij,sj->s", v, h, v) + v @ b
    # Round-off slack on the bound, in the units of v: |b_i| / H_ii is the size of the
    # unconstrained coordinate step, so the test stays scale-free for any |g| / |m|
    # (a zero memory, H_ii = 0, has b_i = 0 and no step).
    diag = jnp.diag(h)
    step = jnp.abs(b) / jnp.where(diag > 0, diag, 1.0) if singular else jnp.abs(b) / diag
    v_scale = jnp.maximum(jnp.abs(margin), jnp.max(step))
    slack = 1e-5 * v_scale
    feasible = jnp.all(v >= margin - slack, axis=1) & jnp.all(jnp.isfinite(v), axis=1)
    best = jnp.argmin(jnp.where(feasible, objective, jnp.inf))
    return jnp.maximum(v[best], margin)


@jax.default_matmul_precision("highest")
def solve_iterative(h: jax.Array, b: jax.Array, margin: float, iters: int = 2000) -> jax.Array:
    """Accelerated projected gradient (FISTA) for large t; step 1 / lambda_max(H) (0 for
    H = 0: all memories zero, any feasible v gives the same update)."""
    top = jnp.linalg.eigvalsh(h)[-1]
    step = jnp.where(top > 0, 1.0 / jnp.where(top > 0, top, 1.0), 0.0)
    v0 = jnp.full_like(b, margin)

    def body(_, state):
        v, y, s = state
        v_new = jnp.maximum(y - step * (h @ y + b), margin)
        s_new = 0.5 * (1 + jnp.sqrt(1 + 4 * s * s))
        y_new = v_new + ((s - 1) / s_new) * (v_new - v)
        return v_new, y_new, s_new

    v, _, _ = jax.lax.fori_loop(0, iters, body, (v0, v0, jnp.ones((), b.dtype)))
    return v


def solve_dual(h: jax.Array, b: jax.Array, margin: float, singular: bool = False) -> jax.Array:
    """Solves the dual QP: closed form for t = 1, enumeration up to
    :data:`MAX_EXACT_T`, FISTA beyond. ``singular``: H may be singular (eps = 0)."""
    t = h.shape[0]
    if t == 1:
        if not singular:
            return jnp.maximum(margin, -b / h[0])
        positive = h[0] > 0  # h = 0: a zero memory, whose v changes nothing
        return jnp.maximum(margin, jnp.where(positive, -b / jnp.where(positive, h[0], 1.0), margin))
    if t <= MAX_EXACT_T:
        return solve_exact(h, b, margin, singular)
    return solve_iterative(h, b, margin)
