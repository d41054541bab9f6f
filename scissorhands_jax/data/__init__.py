"""Data: the embedded digits-10 set, forget-set selection and batching."""

from scissorhands_jax.data._batching import ArraySource, array_source, first_batch
from scissorhands_jax.data.digits import DigitsSplit, load_digits10, select_forget

__all__ = [
    "ArraySource",
    "DigitsSplit",
    "array_source",
    "first_batch",
    "load_digits10",
    "select_forget",
]
