"""ESD and SalUn as unlearning methods of a Stable Diffusion recipe.

Both take the call of every diffusion method, ``method(model, params, *, retain, forget,
key, progress, **settings) -> UnlearnResult``, with ``model`` the UNet seen through
:func:`~scissorhands_jax.sd.prompt_conditioned_model`: a label is a row of the recipe's
table of prompt embeddings, the null label the empty prompt's. The model's ε-function
``eps(params, x_t, t, labels)`` is then itself an ε-model of
:mod:`scissorhands_jax.sd._erasure` whose "context" is a label, so the steps
(:func:`~scissorhands_jax.sd.make_esd_step`, :func:`~scissorhands_jax.sd.make_salun_step`)
are built once and driven over the recipe's latents here.

- :func:`esd_unlearn`: the concept is the forget images' prompt, the unconditional branch
  the empty prompt; x_t comes from the trained UNet's own DDIM on the concept's prompt
  (``x_t="ddim"``, the paper's; only the forget labels are read) or is a forget image's
  latents noised at a uniform t (``x_t="noised"``).
- :func:`salun_unlearn`: the saliency mask from one pass over the forget latents, then
  ``epochs`` passes over them, each step with a retain batch; the other prompt
  :math:`c'` is a random other class per example (the class recipe) or a fixed prompt
  such as the nudity recipe's anchor (``pseudo_label``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax._loop import LossGuard, cycle, report
from scissorhands_jax._settings import check_int
from scissorhands_jax._types import Batch, Mask, Params, PRNGKey
from scissorhands_jax.baselines import UnlearnResult
from scissorhands_jax.data.batching import ArraySource, array_source
from scissorhands_jax.sd._erasure import (
    ESDHyperparameters,
    SalunSDHyperparameters,
    esd_mask,
    other_class,
    salun_mask,
)
from scissorhands_jax.sd._erasure_step import (
    init_erasure_state,
    make_esd_step,
    make_salun_step,
)

LOG_NAMES = {"loss": "loss", "forget_loss": "loss_forget", "retain_loss": "loss_retain"}
"""A step's metrics -> their names in a log entry (``loss*``, as the other methods')."""


def esd_unlearn(
    model: Any,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    progress: bool = False,
    log_every: int = 100,
    **hyperparameters: Any,
) -> UnlearnResult:
    """ESD (:func:`~scissorhands_jax.sd.esd_loss`) on a prompt-conditioned SD.

    ``iterations`` steps of :func:`~scissorhands_jax.sd.make_esd_step`, each on a batch
    of forget examples drawn in shuffled passes: their prompts' embeddings are the concept
    c, the empty prompt's the unconditional branch; the trained entries are those of
    :func:`~scissorhands_jax.sd.esd_mask` (``variant``). With ``x_t="ddim"`` (the
    default, the paper's) x_t is drawn each step by the trained UNet's DDIM from noise of
    the model's latent shape (:func:`~scissorhands_jax.sd.esd_x_t`) and only the forget
    labels are read; with ``x_t="noised"`` it is the batch's latents noised at a
    uniform t.

    Args:
      model: :func:`~scissorhands_jax.sd.prompt_conditioned_model` of the recipe.
      params: the UNet's parameters.
      retain: unused: ESD sees the concept only.
      forget: ``{"image": (N, h, w, C) latents, "label": (N,) prompt labels}`` of images
        of the concept (``"label"`` alone with ``x_t="ddim"``).
      key: PRNG key.
      progress: show a progress bar.
      log_every: steps per log entry.
      **hyperparameters: fields of :class:`~scissorhands_jax.sd.ESDHyperparameters`.

    Returns:
      An :class:`~scissorhands_jax.baselines.UnlearnResult` whose log starts with the
      mask's entry (``selected`` entries) and whose ``mask`` is the ESD mask per entry.

    Raises:
      ValueError: an unknown or bad hyperparameter, ``log_every < 1``, or forget data
        without latents and labels; before any step.
    """
    del retain
    hp = ESDHyperparameters.of("esd", hyperparameters)
    check_int("log_every", log_every, 1)
    source = _source(forget, hp.batch_size, "forget", images=hp.x_t == "noised")
    k_data, k_run = jax.random.split(key)
    start = time.perf_counter()
    mask = _per_entry(esd_mask(params, hp.variant), params)
    entry = {"epoch": "mask", "step": 0, "selected": _count(mask)}
    entry["time_s"] = time.perf_counter() - start
    null = model.null_class

    def batch(b: Batch) -> Batch:
        prompts = {"context": b["label"], "uncond": np.full_like(b["label"], null)}
        return prompts if hp.x_t == "ddim" else {"latents": b["image"], **prompts}

    state, log = _drive(
        make_esd_step(model.eps, model.schedule, hp, latent_shape=model.image_shape),
        init_erasure_state(params, mask, k_run, hp),
        map(batch, cycle(source, k_data)),
        steps=hp.iterations,
        log_every=log_every,
        progress=progress,
        desc="esd",
    )
    return UnlearnResult(state.params, {}, [entry, *log], mask)


def salun_unlearn(
    model: Any,
    params: Params,
    *,
    retain: Any,
    forget: Any,
    key: PRNGKey,
    progress: bool = False,
    log_every: int = 100,
    pseudo_label: int | None = None,
    **hyperparameters: Any,
) -> UnlearnResult:
    """SalUn (:func:`~scissorhands_jax.sd.salun_loss`) on a prompt-conditioned SD.

    The mask is :func:`~scissorhands_jax.sd.salun_mask` of one pass over the forget
    latents with their own prompts; then ``epochs`` shuffled passes over them, each step
    one forget batch and one retain batch (retain passes restart as they run out). The
    other prompt :math:`c'` of a forget example is ``pseudo_label``, or with None a
    class drawn uniformly from the others for each example and step
    (:func:`~scissorhands_jax.sd.other_class`).

    Args:
      model: :func:`~scissorhands_jax.sd.prompt_conditioned_model` of the recipe.
      params: the UNet's parameters.
      retain: ``{"image", "label"}`` latents and prompt labels of the retain images.
      forget: likewise, of the forget images.
      key: PRNG key.
      progress: show a progress bar.
      log_every: steps per log entry.
      pseudo_label: the label of :math:`c'` (the nudity recipe's anchor, 0), or None.
      **hyperparameters: fields of :class:`~scissorhands_jax.sd.SalunSDHyperparameters`.

    Returns:
      An :class:`~scissorhands_jax.baselines.UnlearnResult` whose log starts with the
      mask's entry and whose ``mask`` is the saliency mask.

    Raises:
      ValueError: an unknown or bad hyperparameter, ``log_every < 1``, a
        ``pseudo_label`` that is no prompt's, or data without latents and labels; before
        the mask is computed.
    """
    hp = SalunSDHyperparameters.of("salun", hyperparameters)
    check_int("log_every", log_every, 1)
    num_prompts = model.num_classes
    if pseudo_label is not None and not (
        isinstance(pseudo_label, int) and 0 <= pseudo_label < num_prompts
    ):
        raise ValueError(
            f"salun: pseudo_label must be None (a random other prompt) or the label of one "
            f"of the recipe's {num_prompts} prompts, in [0, {num_prompts}), got {pseudo_label!r}."
        )
    forget_src = _source(forget, hp.batch_size, "forget")
    retain_src = _source(retain, hp.batch_size, "retain")
    k_mask, k_order, k_pseudo, k_f, k_r, k_run = jax.random.split(key, 6)
    start = time.perf_counter()
    own = ({"latents": b["image"], "context": b["label"]} for b in forget_src(k_order))
    mask = salun_mask(model.eps, params, model.schedule, own, k_mask, hp.ratio)
    entry = {"epoch": "mask", "step": 0, "selected": _count(mask)}
    entry["time_s"] = time.perf_counter() - start

    def batches() -> Iterator[Batch]:
        pairs = zip(cycle(forget_src, k_f), cycle(retain_src, k_r), strict=False)  # endless
        for i, (f, r) in enumerate(pairs):
            if pseudo_label is None:
                pseudo = other_class(jax.random.fold_in(k_pseudo, i), f["label"], num_prompts)
            else:
                pseudo = np.full_like(f["label"], pseudo_label)
            yield {
                "forget": {"latents": f["image"], "context": f["label"], "pseudo_context": pseudo},
                "retain": {"latents": r["image"], "context": r["label"]},
            }

    state, log = _drive(
        make_salun_step(model.eps, model.schedule, hp),
        init_erasure_state(params, mask, k_run, hp),
        batches(),
        steps=hp.epochs * forget_src.num_batches,
        log_every=log_every,
        progress=progress,
        desc="salun",
    )
    return UnlearnResult(state.params, {}, [entry, *log], mask)


def _source(part: Any, batch_size: int, name: str, images: bool = True) -> ArraySource:
    """Shuffled batches of ``{"image", "label"}`` (``{"label"}`` without ``images``); full
    batches only where there are enough examples (one compiled step)."""
    if not isinstance(part, dict) or "label" not in part or (images and "image" not in part):
        got = sorted(part) if isinstance(part, dict) else type(part).__name__
        what = "'image' (N, h, w, C) latents and 'label'" if images else "'label'"
        raise ValueError(f"{name} must be a dict with {what} (N,) prompt labels; got {got}.")
    labels = np.asarray(part["label"], np.int32)
    if labels.size == 0:
        raise ValueError(f"{name} holds no examples; prepare the recipe's data first.")
    arrays = {"label": labels}
    if images:
        arrays["image"] = np.asarray(part["image"], np.float32)
    return array_source(arrays, batch_size, drop_last=len(labels) >= batch_size)


def _per_entry(mask: Mask, params: Params) -> Mask:
    return jax.tree.map(lambda m, p: jnp.broadcast_to(m, jnp.shape(p)), mask, params)


def _count(mask: Mask) -> int:
    return int(sum(np.sum(m) for m in jax.device_get(jax.tree.leaves(mask))))


def _drive(step, state, batches: Iterator[Batch], *, steps: int, log_every: int,
           progress: bool, desc: str):  # fmt: skip
    """Runs ``steps`` of ``step`` over ``batches``; every step's loss passes a
    :class:`~scissorhands_jax._loop.LossGuard` one step late (reading it never stalls
    the steps dispatched), and every ``log_every`` steps (and the last) make one entry:
    ``step``, the means of the metrics (:data:`LOG_NAMES`) and ``time_s``."""
    guard = LossGuard()
    log: list[dict[str, Any]] = []
    window: list[dict[str, jax.Array]] = []
    pending = None
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        state, metrics = step(state, next(batches))
        if pending is not None:
            guard.check(desc, *pending)
        pending = (state.step, metrics["loss"])
        window.append(metrics)
        if len(window) == log_every or state.step == steps:
            guard.check(desc, *pending)
            pending = None
            values = jax.device_get(window)
            entry = {"step": state.step}
            for name, key in LOG_NAMES.items():
                if name in values[0]:
                    entry[key] = float(np.mean([v[name] for v in values]))
            entry["time_s"] = time.perf_counter() - start
            log.append(entry)
            report(desc, entry)
            window = []
    return state, log
