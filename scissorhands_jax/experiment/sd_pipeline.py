"""The Stable Diffusion recipes as three resumable steps, run by the generation commands.

- :func:`prepare_sd_data` (``scissorhands diffusion-train`` on an SD config): nobody
  retrains SD, so "train" prepares the data: the forget and retain images are generated
  with the loaded model from the recipe's prompts (or read from folders the user gives)
  and encoded to latents with its autoencoder.
- :func:`unlearn_sd` (``diffusion-unlearn``): one method of
  :data:`~scissorhands_jax.experiment._sd_setup.SD_METHODS` on those latents, the UNet
  saved as ``<method>/checkpoints``.
- :func:`evaluate_sd` (``diffusion-evaluate``): images of the original and of every
  unlearned UNet from a prompt file, judged by NudeNet, a supplied classifier and FID.

The run directory's layout is in :mod:`scissorhands_jax.experiment._sd_setup`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scissorhands_jax._checkpoint import Checkpoints, check_directory
from scissorhands_jax.experiment import _sd_eval
from scissorhands_jax.experiment._sd_setup import (
    REQUEST_KEYS,
    SD_METHODS,
    STEPS_FROM_EPOCHS,
    identity,
    load_sd,
    method_settings,
    prompts_of,
    request,
    sample_settings,
)
from scissorhands_jax.experiment.rundir import (
    check_setting,
    existing_run,
    run_directory,
    write_json_atomic,
)

LATENTS = Path("data") / "latents.npz"
WHAT = "an SD recipe run"


def _maker(cfg: dict) -> str:
    return f"scissorhands diffusion-train {cfg['config_path']}"


def _sharding(mesh):
    if mesh is None:
        return None
    from scissorhands_jax.parallel import batch_sharding

    return batch_sharding(mesh)


# ---------------------------------------------------------------- diffusion-train


def _check_folders(cfg: dict) -> None:
    for part in ("forget", "retain"):
        folder = cfg["data"][f"{part}_dir"]
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"data.{part}_dir {folder!r} is not a folder of images.")


def prepare_sd_data(
    cfg: dict, out: str | Path, *, resume: bool = False, mesh: Any = None, progress: bool = True
) -> int:
    """Generates (or reads) the recipe's forget and retain images into ``out/data`` and
    encodes them to latents (``out/data/latents.npz``); image generation continues where
    a stopped run left it.

    Returns:
      0.

    Raises:
      ValueError: no weights (``model.path``), a bad recipe or image folder, a run of
        another request in ``out``, images there without ``resume``: before any writing.
    """
    from scissorhands_jax.experiment._sd_setup import check_model_setting

    check_model_setting(cfg)
    prompts_of(cfg)
    _check_folders(cfg)
    with run_directory(out) as run_dir:
        fix = "use the config that wrote it, or another --out"
        record = dict(what=WHAT, keys=REQUEST_KEYS, fix=fix)
        check_setting(run_dir / "run.json", request(cfg), write=False, **record)
        if (run_dir / LATENTS).is_file():
            print(f"{run_dir / LATENTS} holds the recipe's latents: nothing to do")
            return 0
        started = [p for p in ("forget", "retain") if (run_dir / "data" / p).is_dir()]
        if started and not resume:
            raise ValueError(
                f"{run_dir / 'data'} already holds generated images ({', '.join(started)}); "
                "pass --resume to continue that run, or choose another --out."
            )
        check_setting(run_dir / "run.json", request(cfg), **record)
        _prepare(cfg, run_dir, mesh, progress)
    return 0


def _prepare(cfg: dict, run_dir: Path, mesh, progress: bool) -> None:
    from scissorhands_jax import sd

    model, scheduler = load_sd(cfg)
    prompts, forget, retain = prompts_of(cfg)
    d = cfg["data"]
    arrays = {"prompts": np.array(prompts)}
    for offset, (part, labels) in enumerate((("forget", forget), ("retain", retain))):
        start = time.perf_counter()
        folder = d[f"{part}_dir"]
        if folder is None:
            folder = run_dir / "data" / part
            prompt_file = run_dir / "data" / f"{part}_prompts.txt"
            prompt_file.parent.mkdir(parents=True, exist_ok=True)
            prompt_file.write_text("".join(prompts[i] + "\n" for i in labels))
            sd.generate_eval_set(model, prompt_file, folder,
                                 images_per_prompt=d[f"{part}_per_prompt"],
                                 seed=d["seed"] + offset, batch_size=d["batch_size"],
                                 sharding=_sharding(mesh),
                                 **sample_settings(cfg, scheduler))  # fmt: skip
        files, part_labels = _images_and_labels(Path(folder), prompts, labels, part)
        latents = _encode(model, files, d["image_size"], d["batch_size"])
        arrays[f"{part}_latents"], arrays[f"{part}_labels"] = latents, part_labels
        print(
            f"{part}: {len(files)} images of {folder} -> latents {latents.shape[1:]} "
            f"in {time.perf_counter() - start:.1f} s"
        )
    tmp = run_dir / "data" / "latents.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(run_dir / LATENTS)


def _images_and_labels(folder: Path, prompts: list[str], labels: list[int], part: str):
    """The images of ``folder`` and the label of each: its prompt's (``index.csv``), or
    the part's one label."""
    import csv

    from scissorhands_jax import sd

    files = sd.image_files(folder)  # those of index.csv, in its order, when it exists
    if not (folder / "index.csv").is_file():
        if len(labels) != 1:
            raise ValueError(
                f"{folder} has no index.csv naming each image's prompt, and the {part} set "
                f"has {len(labels)} prompts; add one (file,prompt columns)."
            )
        return files, np.full(len(files), labels[0], np.int32)
    index = {prompts[i]: i for i in labels}
    out = []
    with (folder / "index.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if "prompt" not in row:
            raise ValueError(f"{folder / 'index.csv'} has no 'prompt' column.")
        if row["prompt"] not in index:
            raise ValueError(
                f"{folder / 'index.csv'}: prompt {row['prompt']!r} is not one of the {part} "
                f"prompts {[prompts[i] for i in labels]!r}."
            )
        out.append(index[row["prompt"]])
    return files, np.array(out, np.int32)


def _encode(model, files: list[Path], size: int, batch_size: int) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    from scissorhands_jax import sd

    encode = jax.jit(sd.encode_latents, static_argnums=0)
    out = []
    for i in range(0, len(files), batch_size):
        images = sd.read_images(files[i : i + batch_size], image_size=(size, size))
        x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
        out.append(np.asarray(encode(model.vae, model.vae_params, x)))
    return np.concatenate(out)


# ---------------------------------------------------------------- diffusion-unlearn


def _data(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / LATENTS
    if not path.is_file():
        raise ValueError(f"{run_dir} holds no {LATENTS}; finish: scissorhands diffusion-train")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def existing_sd_run(cfg: dict, run: str | Path) -> Path:
    """The run directory ``--run run`` of ``cfg``: prepared by ``diffusion-train`` with
    the same request.

    Raises:
      ValueError: no such run, or one of another request.
    """
    run_dir = existing_run(run, maker=_maker(cfg), holds="data", kind="data set")
    check_setting(run_dir / "run.json", request(cfg), what=WHAT, keys=REQUEST_KEYS,
                  fix="use the config that wrote it", write=False)  # fmt: skip
    return run_dir


def conditioned_model(cfg: dict, model, scheduler, prompts: list[str], latent_shape):
    """The recipe's :func:`~scissorhands_jax.sd.prompt_conditioned_model` (the prompts'
    embeddings, the empty prompt's last)."""
    from scissorhands_jax import sd

    contexts = sd.encode_prompts(model, [*prompts, ""])
    return sd.prompt_conditioned_model(model.unet, scheduler.schedule(), contexts, latent_shape)


def unlearn_sd(
    cfg: dict, run: str | Path, method: str, *, mesh: Any = None, progress: bool = True
) -> dict[str, Any]:
    """Runs ``method`` with its config section on the latents of ``run`` and saves the
    UNet (and mask) as ``run/<method>/checkpoints`` with ``run/<method>/log.json``.

    Scissorhands' ``epochs`` (when set) becomes ``steps = epochs * (retain images //
    batch_size)``: one retain batch per step, as the release's loader. ESD runs its
    ``iterations``, SalUn its ``epochs`` over the forget latents.

    Returns:
      The ``log.json`` record.

    Raises:
      ValueError: an unknown method, no prepared data, another request, or an unlearned
        model already there; before any work.
    """
    import jax

    if method not in SD_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(SD_METHODS)}.")
    run_dir = existing_sd_run(cfg, run)
    with run_directory(run_dir, create=False):
        if check_directory(run_dir / method / "checkpoints"):
            raise ValueError(
                f"{run_dir / method} already holds an unlearned model; delete it to unlearn again."
            )
        data = _data(run_dir)
        settings = method_settings(cfg, method)
        if method in STEPS_FROM_EPOCHS and cfg[method].get("epochs"):
            per_epoch = max(len(data["retain_labels"]) // settings["batch_size"], 1)
            settings["steps"] = cfg[method]["epochs"] * per_epoch
        model, scheduler = load_sd(cfg)
        diffusion = conditioned_model(cfg, model, scheduler, list(data["prompts"]),
                                      data["forget_latents"].shape[1:])  # fmt: skip
        params = model.unet_params
        if mesh is not None:
            from scissorhands_jax.parallel import on_mesh

            params = on_mesh(params, mesh)
        part = {p: {"image": data[f"{p}_latents"], "label": data[f"{p}_labels"]}
                for p in ("forget", "retain")}  # fmt: skip
        counts = [len(part[p]["label"]) for p in ("forget", "retain")]
        planned = f", {settings['steps']} steps" if "steps" in settings else ""
        print(f"{method}: {counts[0]} forget, {counts[1]} retain latents{planned}")
        start = time.perf_counter()
        result = SD_METHODS[method](diffusion, params, retain=part["retain"],
                                    forget=part["forget"], key=jax.random.key(cfg[method]["seed"]),
                                    progress=progress, **settings)  # fmt: skip
        jax.block_until_ready(result.params)
        seconds = time.perf_counter() - start
        # ESD and SalUn count their own steps; every entry of their logs names its step
        steps = settings["steps"] if "steps" in settings else result.log[-1]["step"]
        tree = {"params": jax.device_get(result.params)}
        if result.mask is not None:
            tree["mask"] = jax.device_get(result.mask)
        with Checkpoints(run_dir / method / "checkpoints", identity=identity(cfg, method),
                         keep=1) as ck:  # fmt: skip
            ck.save(steps, tree, info={"final": True})
            ck.wait()
        record = {"method": method, "rte_s": seconds, "steps": steps,
                  "settings": cfg[method], "log": result.log}  # fmt: skip
        if result.mask is not None:
            masked = [np.asarray(m) for m in jax.tree.leaves(tree["mask"])]
            record["mask_entries"] = int(sum(m.sum() for m in masked))
        write_json_atomic(run_dir / method / "log.json", record)
    last = {k: v for k, v in result.log[-1].items() if k.startswith("loss")}
    print(f"{method}: done in {seconds:.1f} s; last {last}; saved {run_dir / method}")
    return record


# ---------------------------------------------------------------- diffusion-evaluate


def import_function(spec: str, what: str) -> Callable:
    """The function ``MODULE:FUNCTION`` names.

    Raises:
      ValueError: a malformed or unimportable spec.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{what} wants MODULE:FUNCTION, got {spec!r}.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what} {spec}: {err}") from err


def evaluate_run(cfg: dict, run: str | Path, *, overwrite: bool = False, **hooks) -> dict:
    """:func:`~scissorhands_jax.experiment._sd_eval.evaluate_sd` on the run directory
    ``run`` (locked), refusing an existing ``evaluation.json`` without ``overwrite``."""
    run_dir = existing_sd_run(cfg, run)
    with run_directory(run_dir, create=False):
        if (run_dir / "evaluation.json").exists() and not overwrite:
            raise ValueError(
                f"{run_dir / 'evaluation.json'} already exists (an earlier evaluation); pass "
                "--overwrite to replace it."
            )
        return _sd_eval.evaluate_sd(cfg, run_dir, overwrite=overwrite, **hooks)


# ---------------------------------------------------------------- the commands


def is_sd_config(config: str) -> bool:
    """Whether the config ``config`` (a name or a file) is an SD recipe config (it has a
    ``recipe`` section); False where it cannot be read (the loader then says why)."""
    from scissorhands_jax.experiment.config import config_kind, exec_config, find_config

    try:
        return config_kind(getattr(exec_config(find_config(config)), "CONFIG", None)) == "sd"
    except ValueError:
        return False


def load_sd_config(args) -> dict[str, Any]:
    """The SD config of a generation command's arguments (``--smoke``, ``--set``)."""
    from scissorhands_jax.experiment.config import load_config

    return load_config(args.config, smoke=args.smoke, overrides=args.set, kind="sd")


def train_command(args) -> int:
    """``diffusion-train`` on an SD config: :func:`prepare_sd_data`."""
    from scissorhands_jax.parallel import resolve_mesh

    cfg = load_sd_config(args)
    if args.only or args.until_step:
        raise ValueError("--only and --until-step are for DDPM configs; an SD run prepares data.")
    return prepare_sd_data(cfg, args.out, resume=args.resume, mesh=resolve_mesh(args.mesh),
                           progress=not args.no_progress)  # fmt: skip


def unlearn_command(args) -> int:
    """``diffusion-unlearn`` on an SD config: :func:`unlearn_sd`."""
    from scissorhands_jax.parallel import resolve_mesh

    cfg = load_sd_config(args)
    unlearn_sd(cfg, args.run, args.method, mesh=resolve_mesh(args.mesh),
               progress=not args.no_progress)  # fmt: skip
    return 0


def evaluate_command(args) -> int:
    """``diffusion-evaluate`` on an SD config: images of every UNet from ``eval.prompts``,
    judged (``eval.classifier``, FID with ``--inception-weights`` or ``--fid-features``
    against ``eval.real_dir``, NudeNet where installed)."""
    cfg = load_sd_config(args)
    e = cfg["eval"]
    classify = e["classifier"] and import_function(e["classifier"], "eval.classifier")
    features = args.fid_features and import_function(args.fid_features, "--fid-features")
    if args.inception_weights:
        cfg["eval"]["inception_weights"] = args.inception_weights
    payload = evaluate_run(cfg, args.run, overwrite=args.overwrite, classify=classify or None,
                           features=features or None)  # fmt: skip
    print(f"wrote {Path(args.run) / 'evaluation.json'} ({len(payload['rows'])} models)")
    return 0
