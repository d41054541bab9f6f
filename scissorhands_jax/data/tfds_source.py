"""CIFAR-10, CIFAR-100 and SVHN through tensorflow-datasets, read without TensorFlow.

Reading uses ``tfds.data_source`` (random access to ArrayRecord files, decoded with
NumPy), so training machines need no TensorFlow. *Preparing* a data set (download and
conversion) still needs TensorFlow inside tfds; it lives behind the ``prepare`` extra:

.. code-block:: bash

    pip install ".[prepare]"   # from a clone of the repository (not on PyPI)
    scissorhands prepare cifar10 --data-dir ~/tensorflow_datasets

A split is read once into host memory as uint8 (CIFAR-10: 150 MB), then batched by
:class:`~scissorhands_jax.data.loader.ImageSource`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from scissorhands_jax.data.loader import ImageTable, Normalization


@dataclass(frozen=True)
class TfdsSpec:
    """What we need to know about one tfds data set.

    Attributes:
      name: the tfds name.
      num_classes: classes of ``label``.
      normalization: per-channel statistics of the training split (the values the
        SalUn / Scissorhands release normalises with).
      augment: the training augmentation of the paper's recipe.
    """

    name: str
    num_classes: int
    normalization: Normalization
    augment: str


TFDS_DATASETS = {
    "cifar10": TfdsSpec(
        "cifar10",
        10,
        Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "crop_flip",
    ),
    "cifar100": TfdsSpec(
        "cifar100",
        100,
        Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        "crop_flip",
    ),
    # digits must not be mirrored; no augmentation for SVHN
    "svhn_cropped": TfdsSpec(
        "svhn_cropped",
        10,
        Normalization((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
        "none",
    ),
}
"""The tfds data sets of the paper's classification tables."""


def prepare_command(name: str, data_dir: str | os.PathLike | None) -> str:
    """The shell command that prepares ``name`` in ``data_dir``."""
    where = f" --data-dir {data_dir}" if data_dir else ""
    return f"pip install tensorflow && scissorhands prepare {name}{where}"


def _spec(name: str) -> TfdsSpec:
    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown tfds data set {name!r}; choose one of {sorted(TFDS_DATASETS)}.")
    return TFDS_DATASETS[name]


def _open(name: str, split: str, data_dir):
    import tensorflow_datasets as tfds  # local: importing tfds takes about a second

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several types; diagnose below, then re-raise
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            raise ValueError(
                f"data set {name} is not prepared in {builder.data_dir_root}; run: "
                f"{prepare_command(name, data_dir)}"
            ) from err
        raise ValueError(
            f"data set {name} in {builder.data_dir} cannot be read with tfds.data_source "
            f"({type(err).__name__}: {str(err).splitlines()[0]}); it was probably prepared as "
            f"TFRecord: prepare it as ArrayRecord with: {prepare_command(name, data_dir)}"
        ) from err


def read_tfds_split(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> ImageTable:
    """Reads a whole tfds split (or its first ``limit`` records) into an :class:`ImageTable`.

    Record ``i`` of the split is row ``i`` of the table, so absolute indices are tfds
    record indices.

    Args:
      name: ``"cifar10"``, ``"cifar100"`` or ``"svhn_cropped"``.
      split: ``"train"`` or ``"test"``.
      data_dir: the tfds data directory (None: tfds's default, ``~/tensorflow_datasets``).
      limit: read only the first ``limit`` records (smoke runs).
      progress: show a progress bar.

    Returns:
      The table: uint8 ``(n, 32, 32, 3)`` images and int32 labels.

    Raises:
      ValueError: the data set is not prepared (the message gives the command to run),
        or was prepared in a format ``tfds.data_source`` cannot read.
    """
    _spec(name)
    source = _open(name, split, data_dir)
    n = len(source) if limit is None else min(int(limit), len(source))
    if n == 0:
        raise ValueError(f"{name}/{split} holds no records.")
    first = source[0]
    images = np.empty((n, *np.shape(first["image"])), np.uint8)
    labels = np.empty(n, np.int32)
    for i in tqdm(range(n), desc=f"read {name}/{split}", disable=not progress, leave=False):
        example = first if i == 0 else source[i]
        images[i] = example["image"]
        labels[i] = example["label"]
    return ImageTable(images, labels)


def prepare_tfds(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Downloads and prepares ``name`` as ArrayRecord files (needs TensorFlow).

    Args:
      name: a key of :data:`TFDS_DATASETS`.
      data_dir: the tfds data directory.

    Returns:
      The directory holding the prepared data set.

    Raises:
      ValueError: an unknown name, or TensorFlow is not installed (install the
        ``prepare`` extra).
    """
    _spec(name)
    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            "preparing a tfds data set needs TensorFlow; install it with: "
            "pip install tensorflow (or pip install '.[prepare]' in a clone)"
        )
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return str(builder.data_dir)
