"""The training steps of ESD and SalUn for text-conditional diffusion: Adam on a mask.

A run builds its state once (:func:`init_erasure_state`) and its step once
(:func:`make_esd_step` or :func:`make_salun_step`); the step is
``step(state, batch) -> (state, metrics)``, one ``jax.jit`` program for the whole run
(the ε-model, the settings and the optimiser are bound before ``jax.jit``; the
parameters, the mask, the frozen original, the schedule and the batch are its traced
inputs). The trained parameters and Adam's state are donated: use the returned state.

Placed on a mesh (:func:`scissorhands_jax.parallel.on_mesh`, ``shard=True`` for
FSDP-style sharding of the parameters), the state follows the parameters and every
batch is split over the mesh's data axis, as in the rest of the library.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from scissorhands_jax._loop import private_copy
from scissorhands_jax._types import Batch, Mask, Params, PRNGKey
from scissorhands_jax.baselines import freeze
from scissorhands_jax.diffusion.schedule import NoiseSchedule, q_sample
from scissorhands_jax.parallel import mesh_of, on_mesh, place_like, shard_batch
from scissorhands_jax.sd._erasure import (
    EpsFn,
    ESDHyperparameters,
    SalunSDHyperparameters,
    check_batch,
    esd_loss,
    salun_terms,
)
from scissorhands_jax.sd._erasure_ddim import esd_ddim_plan, esd_x_t
from scissorhands_jax.sd._losses import draw_noise

ErasureStepFn = Callable[["ErasureState", Batch], tuple["ErasureState", dict[str, jax.Array]]]


class ErasureState(NamedTuple):
    """What an ESD or SalUn run carries from one step to the next.

    Attributes:
      step: steps taken (a Python int); step i draws its t and noise from
        ``fold_in(key, i)``, so a resumed run draws the same numbers.
      params: the trained parameters θ.
      opt_state: Adam's state.
      mask: the trainable entries (a bool tree shaped like ``params``, per leaf or per
        entry); the others stay bit-identical.
      key: the run's PRNG key.
      original: the frozen original parameters (ESD's :math:`\\epsilon^*`), None for SalUn.
    """

    step: int
    params: Params
    opt_state: optax.OptState
    mask: Mask
    key: PRNGKey
    original: Params | None = None


def erasure_tx(lr: float) -> optax.GradientTransformationExtraArgs:
    """Adam (no weight decay) at ``lr``, then :func:`~scissorhands_jax.baselines.freeze`:
    with Adam this equals masking the gradients (the releases' way), and frozen entries
    stay bit-identical."""
    return optax.chain(optax.adam(lr), freeze())


def init_erasure_state(
    params: Params,
    mask: Mask,
    key: PRNGKey,
    hp: ESDHyperparameters | SalunSDHyperparameters,
) -> ErasureState:
    """The state a run starts from: a copy of ``params`` (the steps donate it; the
    caller's arrays stay intact), Adam's state, the mask, and for ESD a second copy as the
    frozen original. Parameters placed on a mesh keep their placement (FSDP-style with
    ``on_mesh(params, mesh, shard=True)``); the optimiser state, the mask and the original
    are placed alike: Adam's moments and a per-entry mask are split as the parameters are
    (:func:`~scissorhands_jax.parallel.place_like`), scalars replicated.

    Raises:
      ValueError: ``hp`` of another type, or a mask not shaped like ``params``.
    """
    if not isinstance(hp, (ESDHyperparameters, SalunSDHyperparameters)):
        raise ValueError(
            f"hp must be ESDHyperparameters or SalunSDHyperparameters, got {type(hp).__name__}."
        )
    if jax.tree.structure(mask) != jax.tree.structure(params):
        raise ValueError(
            "mask must be a bool tree with the structure of params (esd_mask or salun_mask)."
        )
    params = private_copy(params)
    original = private_copy(params) if isinstance(hp, ESDHyperparameters) else None
    state = ErasureState(0, params, erasure_tx(hp.lr).init(params), mask, key, original)
    mesh = mesh_of(params)
    if mesh is None:
        return state
    # Adam's moments are created like the parameters (zeros_like keeps the sharding);
    # its step count and whatever else is not placed yet is replicated
    return state._replace(opt_state=on_mesh(state.opt_state, mesh), mask=place_like(mask, params))


def _update(loss_fn, tx, params, opt_state, mask, extra, schedule, batch, key):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, extra, schedule, batch, key
    )
    updates, opt_state = tx.update(grads, opt_state, params, freeze_mask=mask)
    return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}


def _compiled_step(loss_fn, tx, schedule: NoiseSchedule, check: Callable) -> ErasureStepFn:
    update = jax.jit(functools.partial(_update, loss_fn, tx), donate_argnums=(0, 1))

    def step(state: ErasureState, batch: Batch):
        batch = check(batch)
        mesh = mesh_of(state.params)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        key = jax.random.fold_in(state.key, state.step)
        params, opt_state, metrics = update(
            state.params, state.opt_state, state.mask, state.original, schedule, batch, key
        )
        return state._replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def _esd_objective(eps, hp, latent_shape, params, original, schedule, batch, key):
    if hp.x_t == "ddim":
        x_t, t = esd_x_t(eps, params, schedule, batch["context"], batch["uncond"], key,
                         latent_shape=latent_shape, ddim_steps=hp.ddim_steps,
                         start_guidance=hp.start_guidance)  # fmt: skip
    elif "x_t" in batch:
        x_t, t = batch["x_t"], batch["t"]
    else:
        t, noise = draw_noise(key, batch["latents"], schedule.num_timesteps)
        x_t = q_sample(schedule, batch["latents"], t, noise)
    loss = esd_loss(eps, params, original, x_t, t, batch["context"], batch["uncond"],
                    hp.negative_guidance)  # fmt: skip
    return loss, {}


def _check_esd_batch(x_t: str, batch: Any) -> dict:
    given = sorted(k for k in ("latents", "x_t") if isinstance(batch, dict) and k in batch)
    if x_t == "ddim":
        if given:
            raise ValueError(
                f"an ESD batch with x_t='ddim' holds the prompts only ('context', 'uncond'): "
                f"the step draws x_t by its own DDIM; got {given}. Set x_t='noised' in the "
                "hyperparameters to train on given latents."
            )
        keys = ("context", "uncond")
    elif "x_t" in given:
        keys = ("x_t", "t", "context", "uncond")
    else:
        keys = ("latents", "context", "uncond")
    return check_batch(batch, "ESD", keys)


def make_esd_step(
    eps: EpsFn,
    schedule: NoiseSchedule,
    hp: ESDHyperparameters,
    *,
    latent_shape: tuple[int, ...] | None = None,
) -> ErasureStepFn:
    r"""The step of one ESD run: Adam at ``hp.lr`` on :func:`esd_loss` with η =
    ``hp.negative_guidance``, on the trainable entries of the state's mask
    (:func:`esd_mask` with ``hp.variant``).

    Where x_t comes from is ``hp.x_t``:

    - ``"ddim"`` (the paper's): the batch is ``{"context", "uncond"}``, the concept's and
      the empty prompt's conditioning; each step draws x_t and t by
      :func:`~scissorhands_jax.sd.esd_x_t` from the state's key: the parameters being
      trained, without gradient, run part of a DDIM (``hp.ddim_steps``, guidance
      ``hp.start_guidance``) from fresh noise of ``latent_shape``.
    - ``"noised"``: the batch is ``{"latents", "context", "uncond"}``: x_t is the forget
      latents noised at t uniform on the schedule's timesteps (the noise drawn from the
      state's key) - images of the concept, e.g. the frozen model's generations, encoded;
      or ``{"x_t", "t", "context", "uncond"}`` to train on x_t drawn some other way.

    Args:
      eps: the ε-model (:func:`unet_eps`).
      schedule: the training noise schedule (:meth:`SchedulerConfig.schedule`).
      hp: :class:`ESDHyperparameters`.
      latent_shape: the shape of one latent, (h, w, C); needed with ``"ddim"``.

    Returns:
      ``step(state, batch) -> (state, {"loss": ...})`` on an :class:`ErasureState` from
      :func:`init_erasure_state` (with ``hp``).

    Raises:
      ValueError: ``hp`` of another type; with ``"ddim"``, no ``latent_shape`` or more
        DDIM steps than the schedule has timesteps.
    """
    if not isinstance(hp, ESDHyperparameters):
        raise ValueError(f"hp must be ESDHyperparameters, got {type(hp).__name__}.")
    if hp.x_t == "ddim":
        if latent_shape is None:
            raise ValueError(
                "make_esd_step: x_t='ddim' samples x_t from noise and needs latent_shape, "
                "the (h, w, C) of one latent; pass it, or set x_t='noised' to train on "
                "given latents."
            )
        latent_shape = tuple(int(d) for d in latent_shape)
        esd_ddim_plan(schedule, hp.ddim_steps)  # refuses a grid finer than the schedule
    loss_fn = functools.partial(_esd_objective, eps, hp, latent_shape)
    check = functools.partial(_check_esd_batch, hp.x_t)
    return _compiled_step(loss_fn, erasure_tx(hp.lr), schedule, check)


def _salun_objective(eps, alpha, params, extra, schedule, batch, key):
    del extra
    f, r = batch["forget"], batch["retain"]
    k_f, k_r = jax.random.split(key)
    t_f, n_f = draw_noise(k_f, f["latents"], schedule.num_timesteps)
    t_r, n_r = draw_noise(k_r, r["latents"], schedule.num_timesteps)
    forget = (f["latents"], f["context"], f["pseudo_context"], t_f, n_f)
    retain = (r["latents"], r["context"], t_r, n_r)
    forget_loss, retain_loss = salun_terms(eps, params, schedule, forget, retain)
    return forget_loss + alpha * retain_loss, {"forget_loss": forget_loss,
                                               "retain_loss": retain_loss}  # fmt: skip


def _check_salun_batch(batch: Any) -> dict:
    check_batch(batch, "SalUn", ("forget", "retain"))
    check_batch(batch["forget"], "SalUn forget", ("latents", "context", "pseudo_context"))
    check_batch(batch["retain"], "SalUn retain", ("latents", "context"))
    return batch


def make_salun_step(
    eps: EpsFn, schedule: NoiseSchedule, hp: SalunSDHyperparameters
) -> ErasureStepFn:
    r"""The step of one SalUn run: Adam at ``hp.lr`` on :func:`salun_loss` with α =
    ``hp.alpha``, on the entries of the state's mask (:func:`salun_mask`).

    The batch is ``{"forget": {"latents", "context", "pseudo_context"}, "retain":
    {"latents", "context"}}``: the forget images with their own prompts' embeddings and
    those of the other prompt :math:`c'`, and retain images with theirs; t and noise are
    drawn per step from the state's key.

    Args:
      eps: the ε-model (:func:`unet_eps`).
      schedule: the training noise schedule.
      hp: :class:`SalunSDHyperparameters`.

    Returns:
      ``step(state, batch) -> (state, {"loss", "forget_loss", "retain_loss"})``.
    """
    if not isinstance(hp, SalunSDHyperparameters):
        raise ValueError(f"hp must be SalunSDHyperparameters, got {type(hp).__name__}.")
    loss_fn = functools.partial(_salun_objective, eps, hp.alpha)
    return _compiled_step(loss_fn, erasure_tx(hp.lr), schedule, _check_salun_batch)
