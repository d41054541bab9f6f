"""The generation pipeline: a diffusion config -> trained DDPMs, unlearned DDPMs, metrics.

Three steps, each resumable or refusing to redo work, each one call of a command:

- :func:`train_generators` (``scissorhands diffusion-train``): the original DDPM (every
  class), the retrain oracle (without the forget class) and the judge classifier;
- :func:`unlearn_generator` (``diffusion-unlearn``): one method of
  :data:`~scissorhands_jax.diffusion.DIFFUSION_METHODS` with its config section;
- :func:`evaluate_generators` (``diffusion-evaluate``): samples of every model, judged.

``scissorhands generate-demo`` runs the three on the ``digits_ddpm_class0`` config. A
run directory holds::

    run.json                                the request: data, forget class, counts
    original/checkpoints/<step>/  log.json  the DDPM trained on every class
    retrain/checkpoints/<step>/   log.json  the DDPM trained without the forget class
    classifier/checkpoints/<step>/ log.json the judge of the generation metrics
    <method>/checkpoints/<steps>/ log.json  an unlearned DDPM (scissorhands, salun, ...)
    evaluation.json, grid_<model>.png, before_after.png

Every checkpoint goes through :class:`~scissorhands_jax.Checkpoints` with an identity
(data, network, schedule, settings): a run directory is never continued or read under
another config.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scissorhands_jax.diffusion.baselines import DIFFUSION_METHODS
from scissorhands_jax.experiment._generation_setup import (
    GENERATORS,
    PIPELINE_KEYS,
    ROLES,
    build_data,
    build_judge,
    build_model,
    checkpoints,
    classifier_setup,
    committed_steps,
    generator_setup,
    is_text,
    load_generation_config,
    load_generator,
    load_judge,
    load_unlearned,
    restore,
    unlearn,
)
from scissorhands_jax.experiment.pipeline import (
    append_training_log,
    check_saved,
    read_json,
    resume_and_fit,
)
from scissorhands_jax.experiment.rundir import (
    check_setting,
    existing_run,
    run_directory,
    write_json_atomic,
)

__all__ = [
    "COLUMNS",
    "GENERATORS",
    "PIPELINE_KEYS",
    "ROLES",
    "build_data",
    "build_judge",
    "build_model",
    "checkpoints",
    "classifier_setup",
    "committed_steps",
    "evaluate_generators",
    "format_rows",
    "generator_setup",
    "load_generation_config",
    "load_generator",
    "load_judge",
    "load_unlearned",
    "models_present",
    "restore",
    "train_generators",
    "unlearn",
    "unlearn_generator",
]

REQUEST_KEYS = ("data", "forget_class", "num_train", "num_retain", "num_forget", "image_shape")
"""What run.json records of the request: a run directory holds one request only."""

COLUMNS = ("forget_share", "forget_prob", "other_acc", "frechet", "fid", "rte_s")
"""The columns of :func:`format_rows`."""
LEAKAGE_COLUMNS = ("paraphrase_share", "heldout_share")
"""The forgotten concept's share under paraphrased and held-out prompts (text-conditional
runs only), shown after ``forget_share`` when the rows have them."""


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of ``evaluation.json`` as a Markdown table (``-`` where a value is absent)."""
    leakage = [c for c in LEAKAGE_COLUMNS if any(c in row for row in rows)]
    columns = (COLUMNS[0], *leakage, *COLUMNS[1:])
    lines = ["| model | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        cells = [f"{row[c]:.3f}" if row.get(c) is not None else "-" for c in columns]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _maker(cfg: dict) -> str:
    return f"scissorhands diffusion-train {cfg['config_path']}"


# ---------------------------------------------------------------- diffusion-train


def _train_role(cfg, role, data, model, ck, **run) -> tuple[int, int, Any, list]:
    """Continues ``role`` to its end (:func:`resume_and_fit`); ``(step, total, clock, log)``."""
    import jax

    from scissorhands_jax._precision import with_precision

    if role == "classifier":
        judge, _ = build_judge(cfg, data)
        section, source, tx, state, key = classifier_setup(cfg, data, judge)
        total = section["epochs"] * source.num_batches
        state, clock, log = resume_and_fit(
            "classifier", judge.loss, state, source, ck, total=total, key=key,
            epochs=section["epochs"], tx=tx, save_every=section["checkpoint_every"], **run
        )  # fmt: skip
        return state.step, total, clock, log
    section, source, tx, state, key = generator_setup(cfg, role, data, model)
    loss = with_precision(model.loss, section["precision"])
    state, clock, log = resume_and_fit(
        role, loss, state, source, ck, total=section["steps"],
        key=jax.random.split(key, 3)[0],  # the data key of train_diffusion
        steps=section["steps"], tx=tx, lr=section["lr"], ema_decay=section["ema_decay"],
        save_every=section["checkpoint_every"], log_every=section["log_every"], **run
    )  # fmt: skip
    return state.step, section["steps"], clock, log


def train_generators(
    cfg: dict,
    out: str | Path,
    *,
    only: str | None = None,
    resume: bool = False,
    until_step: int | None = None,
    mesh: Any = None,
    progress: bool = True,
) -> int:
    """Trains the original DDPM, the retrain oracle and the judge of ``cfg`` into ``out``
    (or ``only`` one of :data:`ROLES`), checkpointing each; ``resume`` continues to the
    same bits as an uninterrupted run, ``until_step`` stops each model after that many
    steps in total.

    Returns:
      0, or :data:`~scissorhands_jax._preemption.EXIT_PREEMPTED` when preempted (saved).

    Raises:
      ValueError: ``until_step`` < 1, checkpoints without ``resume``, another request in
        ``out``; before any training.
    """
    if until_step is not None and until_step < 1:
        raise ValueError(f"--until-step must be >= 1, got {until_step}.")
    with run_directory(out) as run_dir:  # one writer at a time
        return _train(cfg, run_dir, [only] if only else list(ROLES), resume,
                      dict(until_step=until_step, mesh=mesh, progress=progress))  # fmt: skip


def _train(cfg: dict, run_dir: Path, roles: list[str], resume: bool, run: dict) -> int:
    from scissorhands_jax._preemption import EXIT_PREEMPTED, PreemptionGuard, preemption_requested

    for role in roles:  # before any work
        steps = committed_steps(run_dir, role)
        if steps and not resume:
            raise ValueError(
                f"{run_dir / role / 'checkpoints'} already holds checkpoints (steps {steps}); "
                "pass --resume to continue that run, or choose another --out."
            )
        read_json(run_dir / role / "log.json")  # a damaged log is refused now
    data = build_data(cfg, progress=run["progress"])
    model = build_model(cfg, data)
    if "classifier" in roles:  # the judge trains last: refuse its setting before the DDPMs
        build_judge(cfg, data)
    d = cfg["data"]
    request = {
        "data": d["name"],
        "forget_class": d["forget_class"],
        "num_train": len(data.indices("train")),
        "num_retain": len(data.indices("retain")),
        "num_forget": len(data.indices("forget")),
        "image_shape": list(data.image_shape),
        "config": cfg["config_path"],
        "smoke": cfg["smoke"],
    }
    fix = "use the config that wrote it, or another --out"
    check_setting(run_dir / "run.json", request, what="a diffusion run", fix=fix, keys=REQUEST_KEYS)
    print(
        f"{d['name']}: {request['num_train']} training images, class {d['forget_class']} to "
        f"forget ({request['num_forget']} images), generator at {tuple(data.image_shape)}"
    )
    for role in roles:
        with checkpoints(run_dir, role, cfg, data) as ck, PreemptionGuard():
            step, total, clock, log = _train_role(cfg, role, data, model, ck, **run)
            preempted = preemption_requested()
        seconds = clock.segment_s()
        if not log:
            print(f"{role}: at step {step} of {total}, nothing to do")
            continue
        section = cfg["classifier" if role == "classifier" else GENERATORS[role][0]]
        append_training_log(run_dir / role / "log.json", role, step=step, total=total,
                            seconds=seconds, elapsed=clock.elapsed_s(),
                            segment={"log": log, "schedule": section})  # fmt: skip
        done = "complete" if step >= total else "stopped; continue with --resume"
        print(
            f"{role}: step {step} of {total} ({done}) in {seconds:.1f} s, "
            f"loss {log[-1]['loss']:.4f}; {ck.directory}"
        )
        if preempted:
            print(f"{role}: preempted; saved at step {step}: rerun with --resume")
            return EXIT_PREEMPTED
    return 0


# ---------------------------------------------------------------- diffusion-unlearn


def unlearn_generator(
    cfg: dict, run: str | Path, method: str, *, mesh: Any = None, progress: bool = True
) -> dict[str, Any]:
    """Forgets ``cfg``'s class in the original DDPM of the run directory ``run`` with
    ``method`` (its config section's settings, keyed by the section's seed) and saves the
    result, with its mask, as ``run/<method>/checkpoints`` and ``run/<method>/log.json``.

    Returns:
      The ``log.json`` record (method, RTE, settings, mask size, log).

    Raises:
      ValueError: an unknown method, not a diffusion-train run, or an unlearned model
        already there; before any work.
    """
    if method not in DIFFUSION_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(DIFFUSION_METHODS)}.")
    if is_text(cfg):
        from scissorhands_jax.experiment._text_setup import check_text_method

        check_text_method(cfg, method)
    run_dir = existing_run(run, maker=_maker(cfg), kind="DDPM")
    with run_directory(run_dir, create=False):  # one writer at a time
        return _unlearn(cfg, run_dir, method, mesh, progress)


def _unlearn(cfg: dict, run_dir: Path, method: str, mesh, progress: bool) -> dict[str, Any]:
    import jax
    import numpy as np

    from scissorhands_jax.parallel import on_mesh

    if committed_steps(run_dir, method):
        raise ValueError(
            f"{run_dir / method} already holds an unlearned model; delete it to unlearn again."
        )
    section = cfg[method]
    settings = {k: v for k, v in section.items() if k not in PIPELINE_KEYS["method"]}
    data = build_data(cfg, progress=progress)
    model = build_model(cfg, data)
    params = load_generator(run_dir, "original", cfg, data, model)
    if mesh is not None:  # placed once: the method runs where its parameters live
        params = on_mesh(params, mesh)
    print(
        f"{method}: forgetting class {data.forget_class} ({len(data.indices('forget'))} "
        f"images) in {run_dir / 'original'}"
    )
    with checkpoints(run_dir, method, cfg, data) as ck:
        start = time.perf_counter()
        result = unlearn(method, model, params, data, settings,
                         key=jax.random.key(section["seed"]), progress=progress)  # fmt: skip
        jax.block_until_ready(result.params)
        seconds = time.perf_counter() - start
        tree = {"params": result.params}
        if result.mask is not None:
            tree["mask"] = result.mask
        ck.save(section["steps"], tree, info={"final": True})
        ck.wait()
        check_saved(ck, section["steps"], method)
    record = {"method": method, "rte_s": seconds, "rte_min": seconds / 60, "settings": section}
    if result.mask is not None:
        masked = [np.asarray(m) for m in jax.tree.leaves(jax.device_get(result.mask))]
        record["mask_entries"] = int(sum(m.sum() for m in masked))
        record["mask_fraction"] = record["mask_entries"] / int(sum(m.size for m in masked))
    record["log"] = result.log
    write_json_atomic(run_dir / method / "log.json", record)
    losses = {k: v for k, v in result.log[-1].items() if k.startswith("loss")}
    print(f"{method}: done in {seconds:.1f} s; last {losses}; saved {run_dir / method}")
    return record


# ---------------------------------------------------------------- diffusion-evaluate


def models_present(run_dir: Path) -> list[str]:
    """``retrain``, ``original`` and the unlearned methods with a checkpoint, in order."""
    names = ["retrain", "original", *DIFFUSION_METHODS]
    return [n for n in names if n == "original" or committed_steps(run_dir, n)]


def evaluate_generators(
    cfg: dict,
    run: str | Path,
    *,
    fid_features: Callable | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Samples ``sample.per_class`` images per class from every model of the run (the same
    initial noise for all), judges them with the run's classifier and writes
    ``evaluation.json``, ``grid_<model>.png`` and ``before_after.png``.

    Args:
      cfg: the run's config.
      run: the run directory of :func:`train_generators`.
      fid_features: ``features(images in [0, 1], NHWC) -> (N, D)``; adds ``fid`` to every row.
      overwrite: replace an existing ``evaluation.json``.
      progress: show progress bars.

    Returns:
      The ``evaluation.json`` payload.

    Raises:
      ValueError: ``sample.per_class`` < 2, an existing evaluation without ``overwrite``.
    """
    from scissorhands_jax.experiment._generation_eval import evaluate_run

    run_dir = existing_run(run, maker=_maker(cfg), kind="DDPM")
    if cfg["sample"]["per_class"] < 2:
        raise ValueError("sample.per_class must be at least 2 (the Fréchet distance needs it).")
    _refuse_overwrite(run_dir / "evaluation.json", overwrite)
    with run_directory(run_dir, create=False):
        _refuse_overwrite(run_dir / "evaluation.json", overwrite)  # written meanwhile?
        data = build_data(cfg, progress=progress)
        model = build_model(cfg, data)
        judge, features = build_judge(cfg, data)
        j_params, j_state = load_judge(run_dir, cfg, data, judge)
        weights = {}
        for name in models_present(run_dir):
            if name in GENERATORS:
                weights[name] = load_generator(run_dir, name, cfg, data, model)
            else:
                weights[name] = load_unlearned(run_dir, name, cfg, data, weights["original"])
        judged = (judge, features, j_params, j_state)
        if is_text(cfg):  # prompts instead of class labels: the concept-leakage table
            from scissorhands_jax.experiment._text_eval import evaluate_text_run

            return evaluate_text_run(cfg, run_dir, data, model, weights, judged,
                                     fid_features=fid_features)  # fmt: skip
        return evaluate_run(cfg, run_dir, data, model, weights, judged,
                            fid_features=fid_features, after=list(DIFFUSION_METHODS))  # fmt: skip


def _refuse_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ValueError(
            f"{path} already exists (an earlier evaluation); pass --overwrite to replace it."
        )
