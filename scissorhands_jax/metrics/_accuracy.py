"""Top-1 classification accuracy, the quantity behind UA, RA and TA."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def accuracy(outputs: ArrayLike, labels: ArrayLike) -> float:
    r"""Percentage of examples whose arg-max prediction equals the label.

    .. math::

        \mathrm{acc} = \frac{100}{n} \sum_{j=1}^{n}
            \mathbb{1}\left[\arg\max_c o_{jc} = y_j\right]

    where :math:`o` is ``outputs`` and :math:`y` is ``labels``. The arg-max is the
    same for logits and for their softmax, so either may be passed.

    Example:
        >>> accuracy([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0], [0.2, 0.4]], [0, 1, 1, 1])
        75.0

    Args:
        outputs: Logits or probabilities of shape ``(n, C)`` (NumPy or JAX array).
        labels: Integer class labels of shape ``(n,)``.

    Returns:
        The accuracy in percent, a Python float in ``[0, 100]``.

    Raises:
        ValueError: If ``outputs`` is not 2-D or holds NaN or infinity, ``labels`` is not
            1-D or holds values that are not integers in ``[0, C)``, their lengths
            differ, or there are no examples.
    """
    outputs, labels = check_shapes(outputs, labels, "outputs", "labels")
    if labels.shape[0] == 0:
        raise ValueError("accuracy of an empty set is undefined: got 0 examples.")
    check_labels(labels, outputs.shape[1], "labels")
    if not np.all(np.isfinite(outputs)):
        bad = int(np.sum(~np.all(np.isfinite(outputs), axis=1)))
        raise ValueError(
            f"outputs hold NaN or infinity in {bad} of {outputs.shape[0]} rows; their arg-max "
            "means nothing (was the model diverged?)."
        )
    predictions = np.argmax(outputs, axis=-1)
    return float(100.0 * np.mean(predictions == labels))


def check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
    """Raises ValueError naming ``name`` unless ``labels`` are integers in
    ``[0, num_classes)`` (a negative label would index a class from the end; one past the
    last class matches no prediction)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integers; got dtype {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}); got values in "
            f"[{labels.min()}, {labels.max()}]."
        )


def check_shapes(
    outputs: ArrayLike, labels: ArrayLike, outputs_name: str, labels_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """``outputs`` and ``labels`` as NumPy arrays after checking that they are ``(n, C)``
    with ``C >= 1`` and ``(n,)``.

    Raises:
        ValueError: naming ``outputs_name`` or ``labels_name`` and what is wrong.
    """
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if outputs.ndim != 2:
        raise ValueError(f"{outputs_name} must have shape (n, C); got shape {outputs.shape}.")
    if labels.ndim != 1:
        raise ValueError(f"{labels_name} must have shape (n,); got shape {labels.shape}.")
    if outputs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{outputs_name} and labels disagree on the number of examples: "
            f"{outputs.shape[0]} vs {labels.shape[0]}."
        )
    if outputs.shape[1] == 0:
        raise ValueError(f"{outputs_name} have no class columns (C = 0).")
    return outputs, labels
