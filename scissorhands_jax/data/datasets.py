"""One entry point for every classification data set: tfds, CelebA-HQ folder, digits-10.

:func:`load_dataset` returns a :class:`Dataset` (train and test tables, class count,
normalisation, default augmentation); :func:`make_split` adds the validation hold-out and
the forget request; :meth:`Split.source` batches any part of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from scissorhands_jax.data.celeba_folder import IMAGENET_NORMALIZATION, read_identity_folder
from scissorhands_jax.data.loader import ImageSource, ImageTable, Normalization
from scissorhands_jax.data.splits import SplitIndices, holdout_validation, select_forget_indices
from scissorhands_jax.data.tfds_source import TFDS_DATASETS, read_tfds_split

DATASETS = (*TFDS_DATASETS, "celeba_folder", "digits10")
"""The names :func:`load_dataset` accepts: the tfds data sets, a CelebA-HQ identity
folder and the embedded digits."""
PARTS = ("train", "retain", "forget", "val", "test")


@dataclass(frozen=True)
class Dataset:
    """A labelled image data set.

    Attributes:
      name: its name (a key of :data:`DATASETS`).
      train: the training split.
      test: the test split.
      num_classes: number of labels.
      normalization: how pixels become model inputs (the only place this happens).
      augment: the training augmentation of the paper's recipe for this data.
    """

    name: str
    train: ImageTable
    test: ImageTable
    num_classes: int
    normalization: Normalization
    augment: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])


def _digits10() -> tuple[ImageTable, ImageTable]:
    from scissorhands_jax.data.digits import load_digits10

    split = load_digits10("random10", 0)  # train/test do not depend on the scenario

    def table(part):  # x / 16 is exact in float32: store the 0..16 integers
        return ImageTable(np.rint(part["image"] * 16).astype(np.uint8), part["label"])

    return table(split.train), table(split.test)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    image_size: int | None = None,
    progress: bool = False,
) -> Dataset:
    """Loads a data set by name.

    Args:
      name: ``"cifar10"``, ``"cifar100"``, ``"svhn_cropped"`` (tfds, ArrayRecord),
        ``"celeba_folder"`` (:func:`read_identity_folder` at ``data_dir``) or
        ``"digits10"`` (scikit-learn's embedded digits, the digits-10 protocol's split).
      data_dir: tfds data directory, or the CelebA-HQ folder.
      limit_train: keep only the first ``limit_train`` training examples (smoke runs).
      limit_test: likewise for the test split.
      image_size: the CelebA-HQ resize (default 224).
      progress: progress bars while reading.

    Returns:
      A :class:`Dataset`.

    Raises:
      ValueError: an unknown name, or data that is missing (with the command to fix it).
    """
    if name in TFDS_DATASETS:
        spec = TFDS_DATASETS[name]
        train = read_tfds_split(
            name, "train", data_dir=data_dir, limit=limit_train, progress=progress
        )
        test = read_tfds_split(name, "test", data_dir=data_dir, limit=limit_test, progress=progress)
        return Dataset(name, train, test, spec.num_classes, spec.normalization, spec.augment)
    if name == "celeba_folder":
        train, test, k = read_identity_folder(
            data_dir, image_size=image_size or 224, limit_train=limit_train, limit_test=limit_test
        )
        return Dataset(name, train, test, k, IMAGENET_NORMALIZATION, "flip")
    if name == "digits10":
        train, test = _digits10()
        train, test = _limit(train, limit_train), _limit(test, limit_test)
        return Dataset(name, train, test, 10, Normalization((0.0,), (1.0,), 16.0), "none")
    raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}.")


def _limit(table: ImageTable, limit: int | None) -> ImageTable:
    if limit is None or limit >= len(table):
        return table
    return ImageTable(table.images[: int(limit)], table.labels[: int(limit)])


@dataclass(frozen=True)
class Split:
    """A data set with its validation hold-out and forget request.

    Attributes:
      dataset: the :class:`Dataset`.
      indices: the :class:`SplitIndices` (absolute training-split indices).
    """

    dataset: Dataset
    indices: SplitIndices

    @property
    def test_indices(self) -> np.ndarray:
        """Test examples used for TA: class-wise requests drop the forgotten classes."""
        labels = self.dataset.test.labels
        return np.flatnonzero(~np.isin(labels, self.indices.forgotten_classes))

    def part(self, name: str) -> tuple[ImageTable, np.ndarray]:
        """``(table, indices)`` of ``"train"`` (retain + forget), ``"retain"``,
        ``"forget"``, ``"val"`` or ``"test"``."""
        ix = self.indices
        rows = {
            "train": ix.pool,
            "retain": ix.retain,
            "forget": ix.forget,
            "val": ix.val,
        }
        if name == "test":
            return self.dataset.test, self.test_indices
        if name not in rows:
            raise ValueError(f"unknown part {name!r}; choose one of {PARTS}.")
        return self.dataset.train, rows[name]

    def source(
        self, name: str, batch_size: int, *, shuffle: bool = True, augment: bool = False
    ) -> ImageSource:
        """An :class:`ImageSource` over one part; ``augment`` applies the data set's
        training augmentation."""
        table, rows = self.part(name)
        return ImageSource(
            table,
            rows,
            batch_size,
            self.dataset.normalization,
            augment=self.dataset.augment if augment else "none",
            shuffle=shuffle,
        )

    def labels(self, name: str) -> np.ndarray:
        table, rows = self.part(name)
        return table.labels[rows]


def make_split(
    dataset: Dataset, *, val_fraction: float = 0.1, split_seed: int = 0, forget: dict[str, Any]
) -> Split:
    """Holds out validation (:func:`holdout_validation`) and selects the forget set
    (:func:`select_forget_indices` with the keyword arguments in ``forget``)."""
    labels = dataset.train.labels
    val = holdout_validation(labels, val_fraction, split_seed)
    pool = np.setdiff1d(np.arange(len(dataset.train)), val)
    forget_idx, forgotten = select_forget_indices(labels, pool, **forget)
    return Split(dataset, SplitIndices(len(dataset.train), val, forget_idx, forgotten))
