"""What ``train``, ``unlearn`` and ``evaluate`` share: config -> data, model, run files.

A run directory (``--out`` of ``train``, ``--run`` of the others) holds::

    split.json, forget_indices.npy, val_indices.npy   the request, re-derivable exactly
    original/checkpoints/<step>/   original/log.json  the model trained on retain + forget
    retrain/checkpoints/<step>/    retrain/log.json   the oracle trained on retain only
    unlearned/checkpoints/<step>/  unlearned/log.json the Scissorhands result (+ mask)
    evaluation.json                                   UA, RA, TA, MIA, Avg. Gap, RTE
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._checkpoint import CheckpointError, Checkpoints
from scissorhands_jax._loop import TrainState
from scissorhands_jax._precision import with_precision
from scissorhands_jax._resumable import fit_resumable, step_decay_sgd
from scissorhands_jax.data.datasets import Dataset, Split, load_dataset, make_split
from scissorhands_jax.experiment.rundir import read_state, secondary_process, write_json_atomic
from scissorhands_jax.models import DigitsCNN, Model, ResNet, linen_model

MODELS = {
    "resnet18": {"stage_sizes": (2, 2, 2, 2), "cifar_stem": True},
    "resnet34": {"stage_sizes": (3, 4, 6, 3), "cifar_stem": False},
    "digits_cnn": {},
}
ROLES = {"original": ("train", "train"), "retrain": ("retrain", "retain")}
"""role -> (config section of its schedule, data part it trains on)."""


def build_dataset(cfg: dict, *, progress: bool) -> Dataset:
    """The config's data set (``data.name``, ``data_dir``, limits, image size)."""
    d = cfg["data"]
    return load_dataset(
        d["name"],
        data_dir=d["data_dir"],
        limit_train=d["limit_train"],
        limit_test=d["limit_test"],
        image_size=d["image_size"],
        progress=progress,
    )


def build_split(cfg: dict, *, progress: bool, dataset: Dataset | None = None) -> Split:
    """The config's validation hold-out and forget request over ``dataset`` (default: the
    config's data set, loaded here)."""
    d = cfg["data"]
    if dataset is None:
        dataset = build_dataset(cfg, progress=progress)
    return make_split(
        dataset, val_fraction=d["val_fraction"], split_seed=d["split_seed"], forget=d["forget"]
    )


def build_model(cfg: dict, dataset: Dataset) -> Model:
    """The config's model for ``dataset``'s image shape and classes.

    Raises:
      ValueError: an unknown ``model.name``, or ``model.num_classes`` below the data's
        class count (its labels would not fit the model's outputs).
    """
    m = cfg["model"]
    if m["name"] not in MODELS:
        raise ValueError(f"unknown model.name {m['name']!r}; choose one of {sorted(MODELS)}.")
    num_classes = m["num_classes"] or dataset.num_classes
    if num_classes < dataset.num_classes:
        raise ValueError(
            f"model.num_classes={num_classes} is too few for {dataset.name}, whose labels run "
            f"0..{dataset.num_classes - 1}: set model.num_classes to {dataset.num_classes} "
            "(or None, the data's own count)."
        )
    example = jnp.zeros((1, *dataset.image_shape), jnp.float32)
    if m["name"] == "digits_cnn":
        return linen_model(DigitsCNN(num_classes), example)
    base = MODELS[m["name"]]
    stages = tuple(m["stage_sizes"] or base["stage_sizes"])
    stem = base["cifar_stem"] if m["cifar_stem"] is None else bool(m["cifar_stem"])
    return linen_model(ResNet(stages, num_classes, stem, int(m["width"])), example)


def indices_sha(values: np.ndarray) -> str:
    """A short SHA-256 of an index (or label) array: what a checkpoint identity records."""
    return hashlib.sha256(np.asarray(values, np.int64).tobytes()).hexdigest()[:16]


def identity(cfg: dict, role: str, split: Split) -> dict[str, Any]:
    """What a checkpoint of ``role`` depends on: model, data seen, schedule."""
    data = {
        "name": cfg["data"]["name"],
        "num_train": split.indices.num_train,
        "val_sha": indices_sha(split.indices.val),
        "augment": cfg["data"]["augment"],
        "image_size": cfg["data"]["image_size"],
    }
    if role != "original":
        data["forget_sha"] = indices_sha(split.indices.forget)
    out = {"role": role, "model": cfg["model"], "data": data}
    if role in ROLES:
        schedule = dict(cfg[ROLES[role][0]])
        schedule.pop("checkpoint_every"), schedule.pop("keep")
        out["schedule"] = _without_added_defaults(schedule)
    else:
        out["unlearn"] = _without_added_defaults(cfg["unlearn"])
    return out


_ADDED_DEFAULTS = {"precision": "float32", "project_epochs": None, "calibration": "none"}
"""Settings added after runs were saved, with the defaults that keep those runs' results."""


def _without_added_defaults(section: dict) -> dict:
    """``section`` without the settings of :data:`_ADDED_DEFAULTS` that hold their
    default, so runs saved before the settings existed keep their identity."""
    return {k: v for k, v in section.items() if k not in _ADDED_DEFAULTS or v != _ADDED_DEFAULTS[k]}


def split_description(cfg: dict) -> dict[str, Any]:
    d = cfg["data"]
    keys = ("name", "val_fraction", "split_seed", "forget", "limit_train", "limit_test")
    return {**{k: d[k] for k in keys}, "config": cfg["config_path"], "smoke": cfg["smoke"]}


def record_split(run: Path, split: Split, cfg: dict) -> None:
    """Saves the indices beside the run, or checks they equal the saved ones.

    Raises:
      ValueError: ``run`` already holds a different request.
    """
    why = split.indices.matches_saved(run)
    if why:
        raise ValueError(f"{why}: this run directory belongs to another request; use another one.")
    if not secondary_process():  # one writer in a multi-process job
        split.indices.save(run, split_description(cfg))


def schedule_tx(section: dict, steps_per_epoch: int):
    """The role's optimiser: step-decay SGD with the section's settings."""
    return step_decay_sgd(
        section["lr"],
        steps_per_epoch=steps_per_epoch,
        milestones=tuple(section["milestones"]),
        gamma=section["gamma"],
        momentum=section["momentum"],
        weight_decay=section["weight_decay"],
    )


def role_setup(cfg: dict, role: str, split: Split, model: Model, *, abstract: bool = False):
    """``(section, source, tx, fresh_state, data_key)`` of a training role; with
    ``abstract`` the fresh state holds only shapes (enough to restore a checkpoint)."""
    name, part = ROLES[role]
    section = cfg[name]
    source = split.source(part, section["batch_size"], augment=cfg["data"]["augment"])
    return (section, source, *sgd_setup(section, source, model, abstract=abstract))


def sgd_setup(section: dict, source, model: Model, *, abstract: bool = False):
    """``(tx, fresh_state, data_key)`` of a classifier trained by :func:`schedule_tx` on
    ``source``: ``model.init(key(seed))``, the data keyed by ``fold_in(key(seed), 1)``;
    with ``abstract`` the fresh state holds only shapes (enough to restore a checkpoint)."""
    tx = schedule_tx(section, source.num_batches)
    key = jax.random.key(section["seed"])

    def fresh(key):
        params, model_state = model.init(key)
        return params, model_state, tx.init(params)

    tree = jax.eval_shape(fresh, key) if abstract else fresh(key)
    return tx, TrainState(0, *tree), jax.random.fold_in(key, 1)


def restore(ck: Checkpoints, like: Any) -> tuple[Any, dict]:
    """:meth:`Checkpoints.restore` into host arrays, for the commands (one process, one
    device): orbax returns arrays committed to a device, for which jitted programs
    already compiled for the arrays they made themselves would compile a second time."""
    tree, info = ck.restore(like)
    return jax.device_get(tree), info


def checkpoints(run: Path, role: str, cfg: dict, split: Split) -> Checkpoints:
    keep = cfg[ROLES[role][0]]["keep"] if role in ROLES else 1
    return Checkpoints(run / role / "checkpoints", identity=identity(cfg, role, split), keep=keep)


def train_role(
    run: Path,
    role: str,
    cfg: dict,
    split: Split,
    model: Model,
    ck: Checkpoints,
    *,
    until_step: int | None = None,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> TrainState:
    """Trains ``role`` (``original`` or ``retrain``) into ``run``, continuing from the
    latest checkpoint in ``ck`` if there is one; appends a segment to ``run/role/log.json``
    (seconds, per-epoch losses) and prints one line. ``until_step`` stops early (saved);
    ``mesh`` trains data-parallel (see :func:`~scissorhands_jax._resumable.fit_resumable`).

    Returns:
      The :class:`TrainState` it stopped at (the complete run's state once
      ``step == epochs * batches per epoch``).

    Raises:
      CheckpointError: a checkpoint of another setting (identity) or a corrupt one.
    """
    log_path = run / role / "log.json"
    read_json(log_path)  # a damaged log is refused before the training, not after
    section, source, tx, state, data_key = role_setup(cfg, role, split, model)
    total = section["epochs"] * source.num_batches
    state, clock, log = resume_and_fit(
        role,
        with_precision(model.loss, section["precision"]),
        state,
        source,
        ck,
        total=total,
        key=data_key,
        epochs=section["epochs"],
        tx=tx,
        save_every=section["checkpoint_every"],
        until_step=until_step,
        progress=progress,
        mesh=mesh,
    )
    if not log:
        print(f"{role}: already complete ({total} steps)")
        return state
    seconds = clock.segment_s()
    append_training_log(
        log_path,
        role,
        step=state.step,
        total=total,
        seconds=seconds,
        elapsed=clock.elapsed_s(),
        segment={"epochs": log, "schedule": section},
    )
    done = "complete" if state.step >= total else "stopped; continue with --resume"
    loss = log[-1]["loss"] if log else float("nan")
    print(
        f"{role}: step {state.step} of {total} ({done}) in {seconds:.1f} s, "
        f"loss {loss:.4f}; {ck.directory}"
    )
    return state


def resume_and_fit(
    role: str,
    loss: Any,
    state: TrainState,
    source: Any,
    ck: Checkpoints,
    *,
    total: int,
    until_step: int | None = None,
    progress: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    **schedule: Any,
) -> tuple[TrainState, TrainingClock, list[dict[str, Any]]]:
    """Continues ``role`` from its latest checkpoint in ``ck`` (``state``, a fresh state of
    the right shapes, when there is none) to step ``total`` (or ``until_step``) with
    :func:`~scissorhands_jax._resumable.fit_resumable` and ``schedule``'s keywords, saving
    through ``ck``; every save is on disk and checked when it returns.

    Returns:
      ``(state, clock, log)``: the state it stopped at, the run's
      :class:`TrainingClock` and the log of this segment (empty when the run was complete).
    """
    clock = TrainingClock()
    if ck.latest_step() is not None:
        tree, info = restore(ck, state.tree())
        state = TrainState(ck.latest_step(), **tree)
        clock.resume(info, ck.directory.parent / "log.json")
        print(f"{role}: resuming from step {state.step} of {total}")
    if state.step >= total:
        return state, clock, []
    try:
        state, log = fit_resumable(loss, state, source, stop_step=until_step, save=clock.saver(ck),
                                   progress=progress, desc=role, mesh=mesh, **schedule)  # fmt: skip
    finally:
        ck.wait()  # every asynchronous save is on disk before the log says so
    jax.block_until_ready(state.params)
    check_saved(ck, state.step, role)
    return state, clock, log


def append_training_log(
    path: Path,
    role: str,
    *,
    step: int,
    total: int,
    seconds: float,
    segment: dict,
    elapsed: float | None = None,
) -> None:
    """Adds one training segment (a run from start or resume to ``step``) to the role's
    ``log.json``: ``segments`` (each with ``to_step``, ``time_s`` and ``segment``'s
    entries), ``total_steps``, ``step``, ``complete`` and ``train_time_s``, the RTE of
    a trained model: ``elapsed`` (the :class:`TrainingClock`'s total, which counts the
    segments of killed runs up to their last checkpoint) or else the segments' sum."""
    record = read_json(path, {"role": role, "segments": []})
    record["segments"].append({"to_step": step, "time_s": seconds, **segment})
    if elapsed is None:
        elapsed = sum(s["time_s"] for s in record["segments"])
    record.update(total_steps=total, step=step, complete=step >= total, train_time_s=elapsed)
    write_json_atomic(path, record)


class TrainingClock:
    """The training seconds of a run across its interruptions.

    Each checkpoint's info carries ``elapsed_s``, the run's seconds up to that save, so
    a run resumed after a crash or ``kill -9`` (which leaves no log entry) still counts
    its earlier segments, up to their last checkpoint; compilation is included, as in
    every RTE.
    """

    def __init__(self):
        self.before = 0.0
        self.start = time.perf_counter()

    def resume(self, info: dict, log_path: Path) -> None:
        """Continues from a restored checkpoint's ``info`` (or, for a checkpoint written
        without ``elapsed_s``, from the seconds its log holds)."""
        if "elapsed_s" in info:
            self.before = float(info["elapsed_s"])
        else:
            self.before = float(read_json(log_path, {}).get("train_time_s", 0.0))
        self.start = time.perf_counter()

    def segment_s(self) -> float:
        """Seconds since this process started (or resumed) the run."""
        return time.perf_counter() - self.start

    def elapsed_s(self) -> float:
        """The run's seconds in total."""
        return self.before + self.segment_s()

    def saver(self, ck: Checkpoints):
        """``save(state, info)`` for :func:`fit_resumable` that records ``elapsed_s``."""

        def save(state: TrainState, info: dict) -> None:
            ck.save(state.step, state.tree(), info={**info, "elapsed_s": self.elapsed_s()})

        return save


def check_saved(ck: Checkpoints, step: int, role: str) -> None:
    """Raises CheckpointError unless ``step`` is committed in ``ck`` (a run that reports
    its end must have left it on disk)."""
    if step not in ck.steps():
        raise CheckpointError(
            f"{role}: the checkpoint of step {step} is missing from {ck.directory} after "
            f"saving (it holds steps {ck.steps()}); the run is not saved, check the disk "
            "and the keep setting."
        )


def split_arrays(split: Split, part: str) -> dict[str, np.ndarray]:
    """One part of ``split`` in memory as model inputs: ``{"image": float32 normalised,
    "label": int32}`` in index order, unaugmented (what the array baselines take)."""
    table, rows = split.part(part)
    images = split.dataset.normalization(np.asarray(table.images[rows]))
    return {"image": images, "label": np.asarray(table.labels[rows], np.int32)}


def predictions(
    model: Model,
    params,
    model_state,
    split: Split,
    *,
    batch_size: int,
    progress: bool,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, np.ndarray]:
    """Softmax outputs and labels of the forget, retain and test sets (``forget_probs``,
    ``forget_labels``, ...: the keyword arguments of the metric suites), batched so that
    any data set size fits; the test set omits forgotten classes (:attr:`Split.test_indices`).
    With ``mesh`` every batch is split over its data axis, the model replicated."""
    from tqdm.auto import tqdm

    from scissorhands_jax.models.adapters import predict_probs
    from scissorhands_jax.parallel import on_mesh, shard_batch

    if mesh is not None:
        params, model_state = on_mesh(params, mesh), on_mesh(model_state, mesh)

    out = {}
    for part in ("forget", "retain", "test"):
        source = split.source(part, batch_size, shuffle=False)
        probs, labels = [], []
        for batch in tqdm(
            source.batches(None),  # unshuffled and unaugmented: the key is never read
            total=source.num_batches,
            desc=f"predict {part}",
            disable=not progress,
            leave=False,
        ):
            n = batch["label"].shape[0]
            # pad the last batch to the common shape: one compiled program for every batch
            pad = ((0, source.batch_size - n),) + ((0, 0),) * (batch["image"].ndim - 1)
            images = np.pad(batch["image"], pad)
            if mesh is not None:
                images = shard_batch({"image": images}, mesh)["image"]
            got = predict_probs(model, params, model_state, images, batch_size=source.batch_size)
            probs.append(np.asarray(got)[:n])
            labels.append(batch["label"])
        out[f"{part}_probs"] = np.concatenate(probs)
        out[f"{part}_labels"] = np.concatenate(labels)
    return out


def load_trained(run: Path, role: str, cfg: dict, split: Split, model: Model):
    """``(params, model_state)`` of a finished ``original`` or ``retrain`` run.

    Raises:
      CheckpointError: no checkpoint, an unfinished run, or a mismatched/corrupt one.
    """
    fix = f"scissorhands train {cfg['config_path']} --out {run} --only {role}"
    ck = checkpoints(run, role, cfg, split)
    try:
        if ck.latest_step() is None:
            raise CheckpointError(f"no {role} checkpoint in {ck.directory}; run: {fix}")
        _, _, _, fresh, _ = role_setup(cfg, role, split, model, abstract=True)
        tree, info = restore(ck, fresh.tree())
        if not info.get("final"):
            raise CheckpointError(
                f"the {role} run in {ck.directory} is unfinished (step {ck.latest_step()}); "
                f"finish it with: {fix} --resume"
            )
    finally:
        ck.close()
    return tree["params"], tree["model_state"]


def load_unlearned(run: Path, cfg: dict, split: Split, model: Model):
    """``(params, model_state, mask)`` saved by ``scissorhands unlearn``."""
    ck = checkpoints(run, "unlearned", cfg, split)
    try:
        if ck.latest_step() is None:
            raise CheckpointError(
                f"no unlearned checkpoint in {ck.directory}; run: scissorhands unlearn "
                f"{cfg['config_path']} --run {run}"
            )
        params, model_state = jax.eval_shape(model.init, jax.random.key(0))
        mask = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, bool), params)
        tree, _ = restore(ck, {"params": params, "model_state": model_state, "mask": mask})
    finally:
        ck.close()
    return tree["params"], tree["model_state"], tree["mask"]


def read_json(path: Path, default: Any = None) -> Any:
    """A run file's JSON (``default`` when absent), through
    :func:`~scissorhands_jax.experiment.rundir.read_state`: a damaged one is a one-line error."""
    return read_state(
        path, default, fix=f"delete it, or choose another run directory than {path.parent}"
    )
