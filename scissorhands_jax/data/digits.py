"""digits-10: the small offline protocol on scikit-learn's embedded 8x8 digits (no download)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scissorhands_jax._seed import check_seed

SCENARIOS = ("random10", "class0")
FORGET_SIZE_RANDOM10 = 143


@dataclass(frozen=True)
class DigitsSplit:
    """Train/test split and one forget request on digits-10.

    Attributes:
      train: ``{"image": (n, 8, 8, 1) float32, "label": (n,) int32}``.
      test: the test set; for class-wise forgetting the forgotten class is removed.
      forget_idx: sorted indices into ``train`` of the forget set.
      retain_idx: indices into ``train`` of the rest, ordered by the examples' index in
        the data set (``train_ids``), as the authors' release orders its retain set
        (``numpy.setdiff1d`` of data-set indices). The order matters: the SVC attack's
        members are the first ``len(test)`` retain examples.
      scenario: ``"random10"`` or ``"class0"``.
      train_ids: index in scikit-learn's data set of each ``train`` example.
    """

    train: dict
    test: dict
    forget_idx: np.ndarray
    retain_idx: np.ndarray
    scenario: str
    train_ids: np.ndarray | None = None

    @property
    def forget(self) -> dict:
        return {k: v[self.forget_idx] for k, v in self.train.items()}

    @property
    def retain(self) -> dict:
        return {k: v[self.retain_idx] for k, v in self.train.items()}


def _load_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # local: importing sklearn is slow

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    return x, y


def select_forget(labels: np.ndarray, scenario: str, seed: int) -> np.ndarray:
    """Forget indices into the training set for a scenario of digits-10.

    ``random10``: ``sorted(default_rng(seed).choice(n, 143, replace=False))`` (143 is
    ~10 % of the 1,437 training examples); ``class0``: every training example of class 0.

    Raises:
      ValueError: for an unknown scenario, a seed outside [0, 2**31), or a forget set
        that is empty or the whole training set.
    """
    check_seed("seed", seed)
    n = labels.shape[0]
    if scenario == "random10":
        if n < FORGET_SIZE_RANDOM10:
            raise ValueError(f"random10 needs at least {FORGET_SIZE_RANDOM10} examples, got {n}.")
        idx = np.sort(np.random.default_rng(seed).choice(n, FORGET_SIZE_RANDOM10, replace=False))
    elif scenario == "class0":
        idx = np.flatnonzero(labels == 0)
    else:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}.")
    if idx.size == 0:
        raise ValueError(f"the forget set of {scenario!r} is empty.")
    if idx.size == n:
        raise ValueError(
            f"the forget set of {scenario!r} is the whole training set; nothing would be "
            "retained (train a new model instead)."
        )
    return idx


def load_digits10(scenario: str = "random10", seed: int = 0) -> DigitsSplit:
    """Loads digits-10 with its split and forget request.

    ``perm = default_rng(0).permutation(1797)``; test = ``perm[:360]``, train =
    ``perm[360:]`` (1,437 examples, in that order). For ``class0`` the test set drops
    class 0. The retain set is ordered by data-set index (see :class:`DigitsSplit`).

    Args:
      scenario: ``"random10"`` or ``"class0"``.
      seed: the forget-set seed (random10 only; class0 has one forget set).

    Returns:
      A :class:`DigitsSplit`.
    """
    x, y = _load_arrays()
    perm = np.random.default_rng(0).permutation(x.shape[0])
    test_idx, train_idx = perm[:360], perm[360:]
    train = {"image": x[train_idx], "label": y[train_idx]}
    test = {"image": x[test_idx], "label": y[test_idx]}
    forget_idx = select_forget(train["label"], scenario, seed)
    if scenario == "class0":
        keep = test["label"] != 0
        test = {k: v[keep] for k, v in test.items()}
    retain_pos = np.setdiff1d(np.arange(train["label"].shape[0]), forget_idx)
    retain_idx = retain_pos[np.argsort(train_idx[retain_pos], kind="stable")]
    return DigitsSplit(train, test, forget_idx, retain_idx, scenario, train_ids=train_idx)
