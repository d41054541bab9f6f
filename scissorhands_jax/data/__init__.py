"""Data: digits-10, tfds and CelebA-HQ folder sources, splits, forget requests, batching.

Every name loads on first use (scikit-learn, tfds and the image loaders only when asked
for).
"""

from scissorhands_jax._lazy import lazy_attributes

_ATTRIBUTES = {
    "ArraySource": "scissorhands_jax.data.batching",
    "array_source": "scissorhands_jax.data.batching",
    "first_batch": "scissorhands_jax.data.batching",
    "read_identity_folder": "scissorhands_jax.data.celeba_folder",
    "DATASETS": "scissorhands_jax.data.datasets",
    "Dataset": "scissorhands_jax.data.datasets",
    "Split": "scissorhands_jax.data.datasets",
    "load_dataset": "scissorhands_jax.data.datasets",
    "make_split": "scissorhands_jax.data.datasets",
    "DigitsSplit": "scissorhands_jax.data.digits",
    "load_digits10": "scissorhands_jax.data.digits",
    "select_forget": "scissorhands_jax.data.digits",
    "ImageSource": "scissorhands_jax.data.loader",
    "ImageTable": "scissorhands_jax.data.loader",
    "Normalization": "scissorhands_jax.data.loader",
    "random_crop_flip": "scissorhands_jax.data.loader",
    "FORGET_KINDS": "scissorhands_jax.data.splits",
    "SplitIndices": "scissorhands_jax.data.splits",
    "holdout_validation": "scissorhands_jax.data.splits",
    "read_index_file": "scissorhands_jax.data.splits",
    "select_forget_indices": "scissorhands_jax.data.splits",
    "TFDS_DATASETS": "scissorhands_jax.data.tfds_source",
    "prepare_tfds": "scissorhands_jax.data.tfds_source",
    "read_tfds_split": "scissorhands_jax.data.tfds_source",
}
_SUBMODULES = ("batching", "celeba_folder", "datasets", "digits", "loader", "splits", "tfds_source")

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES, _SUBMODULES)

__all__ = sorted(_ATTRIBUTES)
