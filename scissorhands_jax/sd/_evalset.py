"""Evaluation sets from a prompt file: N images per prompt, PNGs and an index, resumable.

A prompt file is plain text (one prompt a line, blank lines skipped) or a CSV with a
``prompt`` column and optionally an ``evaluation_seed`` or ``seed`` column (the I2P
prompt set's layout). Image j of a prompt with seed s is drawn from
``fold_in(key(s), j)``: it depends on (prompt, seed, j) only, not on the batch, the
device count or what was generated before, so a run that stops can be started again and
skips the images already on disk.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from scissorhands_jax.diffusion.grid import save_png
from scissorhands_jax.sd._sampling import (
    GUIDANCE_SCALE,
    latent_shape,
    sampling_steps,
    text_to_image,
)
from scissorhands_jax.sd._scheduler import SchedulerConfig

SEED_COLUMNS = ("evaluation_seed", "seed")
INDEX_FILE = "index.csv"


class Prompt(NamedTuple):
    """One prompt of a prompt file and its seed (None: the run's default)."""

    text: str
    seed: int | None


def read_prompts(path: str | os.PathLike) -> list[Prompt]:
    """The prompts of a ``.csv`` (``prompt`` column, optional seed column) or text file.

    Raises:
      ValueError: a missing or empty file, a CSV without a ``prompt`` column, or a seed
        that is not an integer.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} does not exist")
    if path.suffix.lower() != ".csv":
        lines = path.read_text(encoding="utf-8").splitlines()
        prompts = [Prompt(line.strip(), None) for line in lines if line.strip()]
    else:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "prompt" not in columns:
                raise ValueError(f"{str(path)!r}: a prompt CSV needs a 'prompt' column")
            seed_column = next((c for c in SEED_COLUMNS if c in columns), None)
            prompts = []
            for line, row in enumerate(reader, start=2):
                seed = (row.get(seed_column) or "").strip() if seed_column else ""
                try:
                    seed = int(float(seed)) if seed else None
                except ValueError:
                    raise ValueError(
                        f"{str(path)!r} line {line}: {seed_column} {seed!r} is not an integer"
                    ) from None
                prompts.append(Prompt((row["prompt"] or "").strip(), seed))
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return prompts


def image_key(seed: int, index: int) -> jax.Array:
    """The key of image ``index`` of a prompt with seed ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), index)


def generate_eval_set(
    sd: Any,
    prompt_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    images_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    num_steps: int = 50,
    guidance_scale: float = GUIDANCE_SCALE,
    scheduler: SchedulerConfig | None = None,
    sampler: str = "ddim",
    height: int = 512,
    width: int = 512,
    sharding: jax.sharding.NamedSharding | None = None,
) -> Path:
    """Generates ``images_per_prompt`` images for each prompt of ``prompt_file``.

    Image j of prompt i is written to ``out_dir/{i:05d}_{j:02d}.png``; images already
    there are skipped. ``out_dir/index.csv`` lists every image (file, prompt_index,
    image_index, seed, prompt), rewritten at the end of each run.

    Args:
      sd: a :class:`~scissorhands_jax.sd.StableDiffusion`.
      prompt_file: see :func:`read_prompts`.
      out_dir: the folder (created).
      images_per_prompt: N.
      seed: the seed of prompts whose file gives none.
      batch_size: images per sampling call (a multiple of the device count avoids
        padding when ``sharding`` is given).
      num_steps, guidance_scale, scheduler, sampler, height, width, sharding: as
        :func:`~scissorhands_jax.sd.text_to_image`.

    Returns:
      The index file's path.

    Raises:
      ValueError: bad prompt file or settings, before anything is written.
    """
    prompts = read_prompts(prompt_file)
    for name, value in (("images_per_prompt", images_per_prompt), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"generate_eval_set: {name} must be a positive integer, got {value!r}")
    latent_shape(sd, height, width)
    sampling_steps(sampler, scheduler or SchedulerConfig(), num_steps)
    out = Path(out_dir)
    rows = [
        (f"{i:05d}_{j:02d}.png", i, j, seed if p.seed is None else p.seed, p.text)
        for i, p in enumerate(prompts)
        for j in range(images_per_prompt)
    ]
    todo = [r for r in rows if not (out / r[0]).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        keys = jax.numpy.stack([image_key(r[3], r[2]) for r in chunk])
        images = text_to_image(
            sd,
            [r[4] for r in chunk],
            keys,
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            scheduler=scheduler,
            sampler=sampler,
            height=height,
            width=width,
            sharding=sharding,
        )
        for r, image in zip(chunk, images, strict=True):
            save_png(out / r[0], np.asarray(image))
    index = out / INDEX_FILE
    tmp = index.with_suffix(".csv.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "prompt_index", "image_index", "seed", "prompt"])
        writer.writerows(rows)
    os.replace(tmp, index)
    return index
