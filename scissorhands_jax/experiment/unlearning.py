"""Unlearning a classifier run: Scissorhands on its original, with the config's settings.

``scissorhands unlearn`` is :func:`method_settings` (every value checked before anything
is written) and :func:`unlearn_run` on a run directory of ``scissorhands train``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scissorhands_jax._method import check_settings, scissorhands
from scissorhands_jax.experiment import pipeline as pipe
from scissorhands_jax.experiment.rundir import write_bytes_atomic, write_json_atomic
from scissorhands_jax.parallel import on_mesh

_NOT_METHOD_ARGS = ("seed", "augment")
"""Keys of a config's ``unlearn`` section that are not settings of ``scissorhands()``."""


def method_settings(cfg: dict, *, progress: bool) -> dict[str, Any]:
    """The keyword settings of ``scissorhands()`` in ``cfg``'s ``unlearn`` section, checked.

    Raises:
      ValueError: a setting out of range or inconsistent (before any work).
    """
    flat = {k: v for k, v in cfg["unlearn"].items() if k not in _NOT_METHOD_ARGS}
    return check_settings(progress=progress, **flat)


def unlearn_run(
    cfg: dict, run_dir: Path, settings: dict[str, Any], *, progress: bool, mesh: Any = None
) -> dict:
    """Unlearns the config's forget set from ``run_dir/original`` and saves
    ``run_dir/unlearned``: the checkpoint (params, model state and the re-initialisation
    mask), the request's indices and ``log.json``.

    Args:
      cfg: the config of the run (its data, model and ``unlearn`` sections).
      run_dir: a run directory of ``scissorhands train``, held by the caller.
      settings: :func:`method_settings` of ``cfg``.
      progress: progress bars.
      mesh: a ``jax.sharding.Mesh`` to run data-parallel on: the original is placed on it
        once and the method follows its parameters; None: one device.

    Returns:
      The record written to ``unlearned/log.json``: RTE (``rte_s``), how many of the
      ``parameters`` were ``reinitialised``, the settings and the per-epoch losses.

    Raises:
      ValueError: ``run_dir`` was written for another request, has no original, or holds
        an unlearned model already.
    """
    split = pipe.build_split(cfg, progress=progress)
    model = pipe.build_model(cfg, split.dataset)
    pipe.record_split(run_dir, split, cfg)  # refuses another request's run directory
    params, model_state = pipe.load_trained(run_dir, "original", cfg, split, model)
    if mesh is not None:  # placed once: the method runs where its parameters live
        params, model_state = on_mesh((params, model_state), mesh)
    ck = pipe.checkpoints(run_dir, "unlearned", cfg, split)
    try:
        if ck.latest_step() is not None:
            raise ValueError(
                f"{ck.directory} already holds an unlearned model; delete "
                f"{run_dir / 'unlearned'} to unlearn again."
            )
        u = cfg["unlearn"]
        print(
            f"unlearning {split.indices.forget.size} examples ({cfg['data']['forget']['kind']}) "
            f"from {run_dir / 'original'}"
        )
        start = time.perf_counter()
        result = scissorhands(
            model,
            params,
            model_state,
            retain=split.source("retain", u["batch_size"], augment=u["augment"]),
            forget=split.source("forget", u["batch_size"], augment=u["augment"]),
            key=jax.random.key(u["seed"]),
            eligible=u["eligible"],
            **settings,
        )
        jax.block_until_ready(result.params)
        seconds = time.perf_counter() - start
        tree = {"params": result.params, "model_state": result.model_state, "mask": result.mask}
        ck.save(u["epochs"], tree, info={"final": True})
        ck.wait()
        pipe.check_saved(ck, u["epochs"], "unlearned")
    finally:
        ck.close()  # waits until the asynchronous save is on disk
    out = run_dir / "unlearned"
    for name in ("forget_indices.npy", "val_indices.npy", "split.json"):
        write_bytes_atomic(out / name, (run_dir / name).read_bytes())
    masked = [np.asarray(m) for m in jax.tree.leaves(jax.device_get(result.mask))]
    reinit = int(sum(m.sum() for m in masked))
    total = int(sum(m.size for m in masked))
    log = {
        "rte_s": seconds,
        "rte_min": seconds / 60,
        "reinitialised": reinit,
        "parameters": total,
        "reinitialised_fraction": reinit / total,
        "unlearn": u,
        "log": result.log,
    }
    write_json_atomic(out / "log.json", log)
    return log
