"""Populations of models, each trained on its own half of one data set, trained at once.

Membership-inference audits such as LiRA (Carlini et al. 2022, "Membership Inference
Attacks From First Principles") and U-LiRA (Hayes et al. 2024, "Inexact Unlearning Needs
More Careful Evaluations to Avoid a False Sense of Privacy") need tens to hundreds of
models trained on random halves of the data, with the membership of every example known
for every model. :func:`membership_matrix` draws the halves, :func:`train_population`
trains the K models together, and :func:`population_logits` scores every example under
every model.

Model ``k`` of a population is exactly the model :func:`scissorhands_jax._training.fit`
trains alone (up to the order of floating-point sums): with ``init_key, shuffle_key =
model_keys(key, k)``,

.. code-block:: python

    params, state = init_fn(init_key)
    subset = {name: x[membership[k]] for name, x in data.items()}
    params, state, _ = fit(loss_fn, params, state, array_source(subset, batch_size),
                           key=shuffle_key, epochs=epochs, tx=tx)

Two backends run the model axis, and either runs an epoch's steps as one ``lax.scan``
program or dispatches one program per step (``scan_steps``):

- ``"vmap"``: one step vectorised over the models (every model's batch gathered by index
  inside the program); the fast way on accelerators, with ``scan_steps``.
- ``"sequential"``: the models one after another (``lax.map`` over models when scanning,
  else a Python loop over models and steps, each step gathering its batch by index from
  one device copy of the data). The fast way on CPU, where XLA turns vectorised
  convolutions into slower grouped ones, and where convolution gradients inside a loop
  body compile 10-90x slower than outside one (jax-ml/jax#12868), so that on CPU the
  steps are dispatched one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scissorhands_jax._loop import LossGuard
from scissorhands_jax._seed import check_seed
from scissorhands_jax._training import train_update
from scissorhands_jax._types import Batch, ModelLossFn, ModelState, Params, PRNGKey
from scissorhands_jax.data import array_source

BACKENDS = ("auto", "vmap", "sequential")
"""How :func:`train_population` and :func:`population_logits` run the model axis."""


def membership_matrix(
    seed: int, num_models: int, num_examples: int, *, strata: np.ndarray | None = None
) -> np.ndarray:
    """Which examples each model of a population trains on: random halves in pairs.

    For every pair ``j``, every stratum ``S`` (examples sharing a ``strata`` id) is
    shuffled; model ``2j`` takes the first ``floor(|S| / 2)`` shuffled examples and model
    ``2j + 1`` the next ``floor(|S| / 2)``, i.e. the other half (all of it when ``|S|``
    is even; one example of an odd stratum is left out of both). So every model holds
    the same number of examples, half of every stratum (e.g. of every class), and where
    the strata sizes are even, every example is IN for exactly ``num_models / 2`` models
    and OUT for the others, as the LiRA experiments of Carlini et al. (2022) arrange it.

    Args:
      seed: the NumPy seed; the matrix is a pure function of the arguments.
      num_models: K, the number of models; even.
      num_examples: N, the number of examples.
      strata: optional int array (N,) of group ids (e.g. the labels); None: one stratum.

    Returns:
      A bool array (K, N): row ``k`` is the training set of model ``k``.

    Raises:
      ValueError: if ``num_models`` is not a positive even number, ``num_examples`` is
        below 2, or ``strata`` is not an int array of length ``num_examples``.

    Example:
      >>> m = membership_matrix(0, 4, 6)
      >>> m.sum(axis=1).tolist(), m.sum(axis=0).tolist()
      ([3, 3, 3, 3], [2, 2, 2, 2, 2, 2])
      >>> bool(((m[0] ^ m[1]) & (m[2] ^ m[3])).all())
      True
    """
    if num_models < 2 or num_models % 2:
        raise ValueError(
            f"membership_matrix: num_models must be a positive even number (models come in "
            f"complementary pairs), got {num_models}."
        )
    if num_examples < 2:
        raise ValueError(f"membership_matrix: num_examples must be >= 2, got {num_examples}.")
    if strata is None:
        strata = np.zeros(num_examples, dtype=np.int64)
    strata = np.asarray(strata)
    if strata.shape != (num_examples,) or not np.issubdtype(strata.dtype, np.integer):
        raise ValueError(
            f"membership_matrix: strata must be an int array of shape ({num_examples},), "
            f"got {strata.dtype} {strata.shape}."
        )
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rng = np.random.default_rng(check_seed("membership_matrix: seed", seed))
    membership = np.zeros((num_models, num_examples), dtype=bool)
    for pair in range(num_models // 2):
        for members in groups:
            half = len(members) // 2
            shuffled = rng.permutation(members)
            membership[2 * pair, shuffled[:half]] = True
            membership[2 * pair + 1, shuffled[half : 2 * half]] = True
    return membership


def model_keys(key: PRNGKey, k: int) -> tuple[PRNGKey, PRNGKey]:
    """``(init_key, shuffle_key)`` of model ``k``: ``fold_in(key, 2k)``, ``fold_in(key, 2k+1)``."""
    return jax.random.fold_in(key, 2 * k), jax.random.fold_in(key, 2 * k + 1)


def stack_trees(trees: Sequence[Any]) -> Any:
    """One pytree whose leaves stack the leaves of ``trees`` along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack_tree(tree: Any, k: int) -> Any:
    """Entry ``k`` of the leading axis of every leaf: model ``k`` of a population."""
    return jax.tree.map(lambda leaf: leaf[k], tree)


def _resolve(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "vmap"
    return backend


def _over_models(fn: Callable, backend: str, args: tuple, in_axes: tuple) -> Any:
    """``fn`` applied to every model: vectorised (``vmap``) or one after another
    (``lax.map``); ``in_axes`` marks the arguments that carry the model axis (0) and
    those shared by all models (None)."""
    if backend == "vmap":
        return jax.vmap(fn, in_axes=in_axes)(*args)
    per_model = tuple(a for a, ax in zip(args, in_axes, strict=True) if ax == 0)

    def one(xs):
        it = iter(xs)
        return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes, strict=True)))

    return jax.lax.map(one, per_model)


def _gathered_step(loss_fn, tx, carry, data, idx):
    """One training step of one model on the examples ``idx`` of ``data``."""
    batch = jax.tree.map(lambda x: x[idx], data)
    *carry, loss = train_update(loss_fn, tx, *carry, batch)
    return tuple(carry), loss


@functools.partial(jax.jit, static_argnames=("loss_fn", "tx", "vmapped"), donate_argnums=(3,))
def _step(loss_fn, tx, vmapped, carry, data, idx):
    """One step of one model (``idx`` (B,)) or, ``vmapped``, of every model (``idx`` (K, B))."""
    if vmapped:
        return jax.vmap(_gathered_step, in_axes=(None, None, 0, None, 0))(
            loss_fn, tx, carry, data, idx
        )
    return _gathered_step(loss_fn, tx, carry, data, idx)


@functools.partial(jax.jit, static_argnames=("loss_fn", "tx", "backend"), donate_argnums=(3,))
def _scanned_steps(loss_fn, tx, backend, carry, data, idx):
    """``idx.shape[1]`` steps of every model (``idx`` (K, S, B)) in one ``lax.scan``."""

    def one_model(carry, idx):
        return jax.lax.scan(lambda c, i: _gathered_step(loss_fn, tx, c, data, i), carry, idx)

    return _over_models(one_model, backend, (carry, idx), (0, 0))


def _epoch_batches(row: np.ndarray, shuffle_key: PRNGKey, epoch: int, batch_size: int):
    """The batches :func:`array_source` draws in ``epoch`` from the examples ``row``, as
    indices into the full data set: a list of (B,) arrays, the last one maybe shorter."""
    source = array_source(np.arange(len(row)), batch_size)
    return [row[b] for b in source(jax.random.fold_in(shuffle_key, epoch))]


def _check_losses(guards: dict[int, LossGuard], pending: list[tuple[int, Sequence[int], Any]]):
    """Puts every step loss of each ``(epoch, models, losses)`` through its model's
    :class:`~scissorhands_jax._loop.LossGuard` (the one divergence rule). Checked one model
    or epoch late, so that reading the losses never stalls the steps already dispatched."""
    for epoch, models, losses in pending:
        per_step = np.asarray(jax.device_get(losses)).reshape(-1, len(models))
        for j, k in enumerate(models):
            guard = guards.setdefault(k, LossGuard())
            first = epoch * len(per_step)
            for s, loss in enumerate(per_step[:, j]):
                guard.check(f"train_population model {k} epoch {epoch}", first + s + 1, loss)
    pending.clear()


def _train_one_by_one(loss_fn, tx, carries, data, members, shuffle_keys, epochs, batch_size, bar):
    """Model after model, one dispatch per step (see :func:`train_population`)."""
    out, pending, guards = [], [], {}
    for k, carry in enumerate(carries):
        # every epoch's batches drawn before the first step: no host wait between epochs
        batches = [
            _epoch_batches(members[k], shuffle_keys[k], e, batch_size) for e in range(epochs)
        ]
        done = []
        for epoch, epoch_batches in enumerate(batches):
            losses = []
            for idx in epoch_batches:
                carry, loss = _step(loss_fn, tx, False, carry, data, idx)
                losses.append(loss)
            done.append((epoch, [k], losses))
        _check_losses(guards, pending)
        pending = done
        out.append(carry)
        bar.update(epochs)
    _check_losses(guards, pending)
    return stack_trees(out)


def _train_together(
    loss_fn, tx, backend, scan, carry, data, members, shuffle_keys, epochs, batch_size, bar
):
    """Every model at each step (vmap) or epoch (scan over steps, either backend)."""
    models, pending, guards = list(range(len(members))), [], {}
    for epoch in range(epochs):
        per_model = [
            _epoch_batches(row, key, epoch, batch_size)
            for row, key in zip(members, shuffle_keys, strict=True)
        ]
        # The same batch sizes for every model: stack batch s of all models.
        steps = [np.stack(batch) for batch in zip(*per_model, strict=True)]
        losses = []
        if scan:
            full = [s for s in steps if s.shape[1] == batch_size]
            for group in (full, steps[len(full) :]):
                if group:
                    carry, loss = _scanned_steps(
                        loss_fn, tx, backend, carry, data, np.stack(group, axis=1)
                    )
                    losses.append(loss.T)
            losses = jnp.concatenate(losses)
        else:
            for idx in steps:
                carry, loss = _step(loss_fn, tx, True, carry, data, idx)
                losses.append(loss)
        _check_losses(guards, pending)
        pending = [(epoch, models, losses)]
        bar.update(len(members))
    _check_losses(guards, pending)
    return carry


def train_population(
    loss_fn: ModelLossFn,
    init_fn: Callable[[PRNGKey], tuple[Params, ModelState]],
    data: Batch,
    membership: np.ndarray,
    *,
    key: PRNGKey,
    epochs: int,
    batch_size: int,
    tx: optax.GradientTransformation,
    backend: str = "auto",
    scan_steps: bool | None = None,
    progress: bool = False,
) -> tuple[Params, ModelState]:
    """Trains K models, model ``k`` on the examples ``membership[k]`` of ``data``.

    Model ``k`` starts from ``init_fn(init_key)`` and trains for ``epochs`` epochs of
    steps with ``tx`` on its own subset, batched and shuffled exactly as
    :func:`scissorhands_jax._training.fit` does with ``array_source(subset, batch_size)``
    and ``key=shuffle_key`` (the last batch of an epoch is short when ``batch_size``
    does not divide the subset), where ``init_key, shuffle_key = model_keys(key, k)``.
    Every model must hold the same number of examples (as :func:`membership_matrix`
    arranges), so that all take the same steps. Batches are gathered by index inside
    the compiled step from one device copy of ``data``.

    Args:
      loss_fn: ``loss_fn(params, model_state, batch, train) -> (loss, new_model_state)``
        (:attr:`Model.loss`).
      init_fn: ``init_fn(key) -> (params, model_state)`` (:attr:`Model.init`).
      data: a dict (pytree) of arrays sharing the leading example axis of length N.
      membership: bool (K, N); row ``k`` marks model ``k``'s training examples.
      key: the population key (see :func:`model_keys`).
      epochs: epochs per model.
      batch_size: examples per batch.
      tx: the optimiser (hashable: build it once, e.g. with
        :func:`scissorhands_jax._training.sgd`); each model has its own state.
      backend: ``"vmap"`` (one step vectorised over the models), ``"sequential"`` (the
        models one after another) or ``"auto"`` (``"sequential"`` on CPU, ``"vmap"``
        on accelerators).
      scan_steps: run an epoch's steps in one ``lax.scan`` program (one dispatch per
        epoch) instead of one dispatch per step. None: scan on accelerators, not on CPU,
        where XLA compiles the gradient convolutions inside a loop body to a generic
        emitter 10-90x slower than outside one (jax-ml/jax#12868; measured here on the
        digits CNN), far more than the dispatch it saves. Tiny convolution-free models
        on CPU run faster with ``scan_steps=True``.
      progress: show a progress bar over model-epochs.

    Returns:
      ``(params, model_state)``, every leaf with a leading model axis K (take one model
      with :func:`unstack_tree`).

    Raises:
      ValueError: on a membership matrix that is not bool (K, N), a model with no
        examples, models of different sizes, or an unknown backend.
      FloatingPointError: when a model's loss becomes non-finite or diverges at a step
        (:class:`~scissorhands_jax._loop.LossGuard`, one guard per model; raised at most
        one model or epoch later, before anything is returned).
    """
    backend = _resolve(backend)
    if scan_steps is None:
        scan_steps = jax.default_backend() != "cpu"
    data = jax.tree.map(np.asarray, data)
    sizes = {x.shape[0] for x in jax.tree.leaves(data)}
    membership = np.asarray(membership)
    if len(sizes) != 1:
        raise ValueError(f"train_population: data leaves disagree on the example count: {sizes}.")
    if membership.dtype != bool or membership.ndim != 2 or membership.shape[1] not in sizes:
        raise ValueError(
            f"train_population: membership must be a bool array (K, {sizes.pop()}), got "
            f"{membership.dtype} {membership.shape}; build it with membership_matrix."
        )
    counts = membership.sum(axis=1)
    if counts.min() == 0 or counts.min() != counts.max():
        raise ValueError(
            "train_population: every model must train on the same, non-zero number of "
            f"examples; membership rows hold {counts.min()} to {counts.max()}. Use "
            "membership_matrix, which gives each model half of every stratum."
        )
    if epochs < 0 or batch_size < 1:
        raise ValueError(
            f"train_population: need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}."
        )
    members = np.stack([np.flatnonzero(row) for row in membership])
    keys = [model_keys(key, k) for k in range(len(membership))]
    # Batches are drawn on the host CPU (the same bits as on any device), so that drawing
    # the next epoch's never waits for the accelerator's queue of training steps.
    cpu = jax.devices("cpu")[0]
    shuffle_keys = [jax.device_put(shuffle_key, cpu) for _, shuffle_key in keys]
    carries = []
    for init_key, _ in keys:
        params, model_state = init_fn(init_key)
        carries.append((params, model_state, tx.init(params)))
    device_data = jax.tree.map(jnp.asarray, data)
    total = epochs * len(members)
    with tqdm(total=total, desc="population", disable=not progress, leave=False) as bar:
        if backend == "sequential" and not scan_steps:
            carry = _train_one_by_one(
                loss_fn, tx, carries, device_data, members, shuffle_keys, epochs, batch_size, bar
            )
        else:
            carry = _train_together(
                loss_fn,
                tx,
                backend,
                scan_steps,
                stack_trees(carries),
                device_data,
                members,
                shuffle_keys,
                epochs,
                batch_size,
                bar,
            )
    params, model_state, _ = carry
    return params, model_state


@functools.partial(jax.jit, static_argnames=("logits_fn", "backend"))
def _population_logits_batch(logits_fn, backend, params, model_state, x):
    return _over_models(lambda p, s: logits_fn(p, s, x), backend, (params, model_state), (0, 0))


def population_logits(
    logits_fn: Callable[[Params, ModelState, jax.Array], jax.Array],
    params: Params,
    model_state: ModelState,
    inputs: Any,
    *,
    batch_size: int = 1024,
    backend: str = "auto",
) -> np.ndarray:
    """Evaluation-mode logits of every example under every model of a population.

    Args:
      logits_fn: ``logits_fn(params, model_state, x) -> logits`` (:attr:`Model.logits`).
      params: the population's parameters (leading model axis K).
      model_state: the population's model state (leading model axis K).
      inputs: an array (N, ...) of inputs.
      batch_size: inputs per program call.
      backend: as in :func:`train_population`.

    Returns:
      A float NumPy array (K, N, C).
    """
    backend = _resolve(backend)
    inputs = np.asarray(inputs)
    outs = [
        np.asarray(
            _population_logits_batch(
                logits_fn, backend, params, model_state, jnp.asarray(inputs[i : i + batch_size])
            )
        )
        for i in range(0, inputs.shape[0], batch_size)
    ]
    return np.concatenate(outs, axis=1)
