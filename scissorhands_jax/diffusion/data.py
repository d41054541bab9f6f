"""A labelled image data set prepared for class forgetting in a class-conditional DDPM.

The generator sees images in [-1, 1] at its own resolution (digits may be upsampled from
8x8 to 16x16); the judge classifier sees the data set's own normalisation at the data
set's own resolution. :class:`GenerationData` holds both views of one
:class:`~scissorhands_jax.data.Dataset` and the forget request (one class), and gives
the step-keyed sources the resumable training needs: batch ``i`` of the epoch drawn by
``key`` depends on nothing else (:class:`~scissorhands_jax.data.ImageSource`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax.data.datasets import Dataset, load_dataset
from scissorhands_jax.data.loader import ImageSource, ImageTable, Normalization
from scissorhands_jax.diffusion.model import NoisedSource

PARTS = ("train", "retain", "forget")


def upsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling of (N, H, W, C) by an integer ``factor``."""
    if factor == 1:
        return images
    return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def downsample(x: jax.Array, factor: int) -> jax.Array:
    """Mean pooling of (N, H, W, C) over ``factor`` x ``factor`` blocks."""
    if factor == 1:
        return x
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


@dataclass(frozen=True)
class GenerationData:
    """A data set and the class to forget, in the views the generation runs need.

    Attributes:
      dataset: the :class:`~scissorhands_jax.data.Dataset` (uint8 tables).
      forget_class: the class to forget.
      factor: the generator's resolution over the data's (1, or 2 for 16x16 digits).
    """

    dataset: Dataset
    forget_class: int
    factor: int = 1

    def __post_init__(self):
        k = self.dataset.num_classes
        if not 0 <= self.forget_class < k:
            raise ValueError(f"forget_class must be in 0..{k - 1}, got {self.forget_class!r}.")

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The generator's (H, W, C)."""
        h, w, c = self.dataset.image_shape
        return (h * self.factor, w * self.factor, c)

    def indices(self, part: str) -> np.ndarray:
        """Training-split rows of ``"train"`` (all), ``"retain"`` or ``"forget"``."""
        labels = self.dataset.train.labels
        if part == "train":
            return np.arange(len(labels))
        if part == "retain":
            return np.flatnonzero(labels != self.forget_class)
        if part == "forget":
            return np.flatnonzero(labels == self.forget_class)
        raise ValueError(f"unknown part {part!r}; choose one of {PARTS}.")

    def _unit_range(self) -> Normalization:
        c = self.dataset.image_shape[-1]  # u / max -> [-1, 1]: (u / max - 0.5) / 0.5
        return Normalization((0.5,) * c, (0.5,) * c, self.dataset.normalization.max_value)

    def _generator_table(self) -> ImageTable:
        train = self.dataset.train
        return ImageTable(upsample(np.asarray(train.images), self.factor), train.labels)

    def source(
        self, part: str, batch_size: int, *, flip: bool = False, shuffle: bool = True
    ) -> NoisedSource:
        """Batches of ``part`` in [-1, 1] at the generator's resolution, with the noise keys
        of the ε-loss; full batches only, so the training step compiles once (a part
        smaller than ``batch_size`` gives one batch of all of it).

        Args:
          part: ``"train"``, ``"retain"`` or ``"forget"``.
          batch_size: examples per batch.
          flip: random horizontal flips (a pure function of the epoch key and the batch).
          shuffle: a new order every epoch.
        """
        rows = self.indices(part)
        if rows.size == 0:
            raise ValueError(f"the {part} set is empty.")
        images = ImageSource(
            self._generator_table(),
            rows,
            max(min(int(batch_size), rows.size), 1),
            self._unit_range(),
            augment="flip" if flip else "none",
            shuffle=shuffle,
            drop_last=True,
        )
        return NoisedSource(images)

    def images(self, part: str) -> np.ndarray:
        """All images of ``part`` in [-1, 1] at the generator's resolution (float32)."""
        images = np.asarray(self.dataset.train.images[self.indices(part)])
        return self._unit_range()(upsample(images, self.factor))

    def labels(self, part: str) -> np.ndarray:
        return np.asarray(self.dataset.train.labels[self.indices(part)], np.int32)

    def classifier_source(self, batch_size: int, *, augment: bool) -> ImageSource:
        """The judge's training batches: every training image, the data set's own
        normalisation and (with ``augment``) its own augmentation."""
        return ImageSource(
            self.dataset.train,
            self.indices("train"),
            batch_size,
            self.dataset.normalization,
            augment=self.dataset.augment if augment else "none",
        )

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, labels)`` of the test split as the judge sees them."""
        test = self.dataset.test
        return self.dataset.normalization(np.asarray(test.images)), np.asarray(test.labels)

    def judge_input(self, x: jax.Array) -> jax.Array:
        """Generated images (N, H, W, C) in [-1, 1] -> the judge's input: the data's
        resolution and normalisation (the inverse of :meth:`source`'s scaling)."""
        norm = self.dataset.normalization
        unit = downsample((jnp.asarray(x, jnp.float32) + 1.0) / 2.0, self.factor)
        return (unit - jnp.asarray(norm.mean, jnp.float32)) / jnp.asarray(norm.std, jnp.float32)


def load_generation_data(
    name: str,
    *,
    forget_class: int,
    image_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    progress: bool = False,
) -> GenerationData:
    """Loads a data set by name (:func:`~scissorhands_jax.data.load_dataset`: digits-10
    from scikit-learn, CIFAR-10 through tfds) for a class-forgetting generation run.

    Args:
      name: ``"digits10"``, ``"cifar10"``, or another :data:`~scissorhands_jax.data.DATASETS`.
      forget_class: the class to forget.
      image_size: the generator's resolution, an integer multiple of the data's (None:
        the data's own).
      data_dir, limit_train, limit_test, progress: as for ``load_dataset``.

    Raises:
      ValueError: an unknown data set, missing data, or a bad ``image_size`` or class.
    """
    dataset = load_dataset(
        name, data_dir=data_dir, limit_train=limit_train, limit_test=limit_test, progress=progress
    )
    size = dataset.image_shape[0]
    factor = 1 if image_size is None else int(image_size) // size
    if factor < 1 or factor * size != (image_size or size):
        raise ValueError(f"image_size must be a multiple of {name}'s {size}, got {image_size!r}.")
    return GenerationData(dataset, int(forget_class), factor)
