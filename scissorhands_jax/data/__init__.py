"""Data: digits-10, tfds and CelebA-HQ folder sources, splits, forget requests, batching."""

from scissorhands_jax.data._batching import ArraySource, array_source, first_batch
from scissorhands_jax.data.celeba_folder import read_identity_folder
from scissorhands_jax.data.datasets import DATASETS, Dataset, Split, load_dataset, make_split
from scissorhands_jax.data.digits import DigitsSplit, load_digits10, select_forget
from scissorhands_jax.data.loader import (
    ImageSource,
    ImageTable,
    Normalization,
    random_crop_flip,
)
from scissorhands_jax.data.splits import (
    FORGET_KINDS,
    SplitIndices,
    holdout_validation,
    read_index_file,
    select_forget_indices,
)
from scissorhands_jax.data.tfds_source import TFDS_DATASETS, prepare_tfds, read_tfds_split

__all__ = [
    "ArraySource",
    "DATASETS",
    "Dataset",
    "DigitsSplit",
    "FORGET_KINDS",
    "ImageSource",
    "ImageTable",
    "Normalization",
    "Split",
    "SplitIndices",
    "TFDS_DATASETS",
    "array_source",
    "first_batch",
    "holdout_validation",
    "load_dataset",
    "load_digits10",
    "make_split",
    "prepare_tfds",
    "random_crop_flip",
    "read_identity_folder",
    "read_index_file",
    "read_tfds_split",
    "select_forget",
    "select_forget_indices",
]
