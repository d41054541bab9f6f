"""Model-level uncertainty of population attacks: two-way bootstrap, jackknife, pair-flip null.

An attack over a model population makes one decision per (model, example). Those
decisions share models (one under-confident model shifts all its decisions) and share
examples (one hard example shifts all models' decisions on it), so resampling examples
with the models held fixed sees only half of the noise: the interval is too narrow and
excludes chance even where the two families are one distribution. Here the units of
resampling are both: groups of models (the complementary pairs of
:func:`scissorhands_jax.population.membership_matrix`) and examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from scissorhands_jax.metrics._audit import ulira


def pair_rows(pairs: Any) -> np.ndarray:
    """The model rows ``2j, 2j + 1`` of every pair ``j`` of ``pairs``, in that order.

    Example:
      >>> pair_rows([2, 0]).tolist()
      [4, 5, 0, 1]
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    return np.stack([2 * pairs, 2 * pairs + 1], axis=-1).reshape(-1)


def two_way_bootstrap(
    statistic: Callable[[np.ndarray, np.ndarray], Any],
    num_groups: int,
    num_columns: int,
    *,
    num_samples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap replicates of a statistic of a (groups of models) x (examples) table.

    Each replicate draws ``num_groups`` group indices and, independently,
    ``num_columns`` example indices, both with replacement, and evaluates
    ``statistic(groups, columns)``: the statistic of the table with those rows and
    columns, repeats included.

    Args:
      statistic: ``statistic(groups, columns)`` on int arrays of indices: a float, or
        a tuple of floats (several statistics of the same resample).
      num_groups: G, the number of groups (e.g. model pairs).
      num_columns: C, the number of examples.
      num_samples: bootstrap replicates.
      seed: the NumPy seed.

    Returns:
      float (num_samples,) or (num_samples, m): the replicates.
    """
    if num_groups < 1 or num_columns < 1 or num_samples < 1:
        raise ValueError(
            f"two_way_bootstrap: need num_groups, num_columns and num_samples >= 1, got "
            f"{num_groups}, {num_columns} and {num_samples}."
        )
    rng = np.random.default_rng(seed)
    draws = [
        (rng.integers(0, num_groups, num_groups), rng.integers(0, num_columns, num_columns))
        for _ in range(num_samples)
    ]
    return np.array([statistic(groups, columns) for groups, columns in draws], dtype=np.float64)


def two_way_bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    num_groups: int,
    num_columns: int,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """A percentile bootstrap interval that resamples groups of models and examples at once.

    The replicates of :func:`two_way_bootstrap`; the interval is their
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. For the mean of a table
    ``a_g + b_c`` the replicates' variance is ``var(a) / G + var(b) / C`` (plug-in
    variances): both sources of noise, where resampling the examples alone gives
    ``var(b) / C``. (The bootstrap of a crossed design; it is conservative where
    row-column interactions are large: Owen 2007, "The pigeonhole bootstrap".)

    Args:
      statistic: ``statistic(groups, columns) -> float`` on int arrays of indices.
      num_groups: G, the number of groups (e.g. model pairs).
      num_columns: C, the number of examples.
      num_samples: bootstrap replicates.
      seed: the NumPy seed.
      level: the coverage, in (0, 1).

    Returns:
      ``(estimate, low, high)``: the statistic of the whole table and the interval
      (NaN where an infinite statistic makes a quantile undefined).
    """
    if not 0 < level < 1:
        raise ValueError(f"two_way_bootstrap_ci: need 0 < level < 1, got {level}.")
    values = two_way_bootstrap(
        statistic, num_groups, num_columns, num_samples=num_samples, seed=seed
    )
    with np.errstate(invalid="ignore"):  # quantiles between infinite values: inf - inf
        low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    estimate = statistic(np.arange(num_groups), np.arange(num_columns))
    return float(estimate), float(low), float(high)


def jackknife_se(statistic: Callable[[np.ndarray], float], num_groups: int) -> float:
    """The leave-one-group-out jackknife standard error of ``statistic``.

    .. math::

        \\widehat{se} = \\sqrt{\\frac{G - 1}{G} \\sum_{g=1}^{G}
                        (\\theta_{(g)} - \\bar\\theta)^2}

    with ``theta_(g) = statistic(all groups but g)`` and ``theta-bar`` their mean
    (Efron & Tibshirani 1993, Ch. 11). For a mean of group means it is exactly the
    standard error ``s / sqrt(G)`` of the group means.

    Args:
      statistic: ``statistic(groups) -> float`` on an int array of group indices.
      num_groups: G, at least 2.

    Returns:
      The standard error.
    """
    if num_groups < 2:
        raise ValueError(f"jackknife_se: need num_groups >= 2, got {num_groups}.")
    everyone = np.arange(num_groups)
    theta = np.array([statistic(np.delete(everyone, g)) for g in everyone])
    return float(np.sqrt((num_groups - 1) / num_groups * np.sum((theta - theta.mean()) ** 2)))


def ulira_null(
    phi: Any,
    forgot_mask: Any,
    unseen_mask: Any,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    **fit_options: Any,
) -> np.ndarray:
    """U-LiRA accuracies of a population scored against itself, pair roles flipped at random.

    ``phi`` (K, N) are the outputs of one model family that never trained on any of the
    N examples (the retrains), and ``forgot_mask`` / ``unseen_mask`` the audit's labels:
    in every complementary pair ``(2j, 2j + 1)`` one model is labelled "forgot x" and
    the other "never saw x". No model saw x, so which of the two carries which label is
    arbitrary: swapping the two rows of a pair leaves the population's distribution
    unchanged. Each draw swaps every pair with probability 1/2 and recomputes
    :func:`~scissorhands_jax.metrics.ulira`'s accuracy; the draws are the randomisation
    distribution of the attack's accuracy under "no membership effect", with the
    design's own pair structure, and its upper quantile a bound that the untouched
    population exceeds with that probability only.

    Args:
      phi: float (K, N), K even, rows in complementary pairs.
      forgot_mask: bool (K, N), the "forgot" labels.
      unseen_mask: bool (K, N), the "never saw" labels.
      num_samples: random flips.
      seed: the NumPy seed.
      **fit_options: passed to :func:`~scissorhands_jax.metrics.ulira` (e.g.
        ``exclude_partner``, ``fixed_variance``).

    Returns:
      float (num_samples,): the accuracy of each flipped population.
    """
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[0] % 2 or num_samples < 1:
        raise ValueError(
            f"ulira_null: need phi (K, N) with K even and num_samples >= 1, got {phi.shape} "
            f"and {num_samples}."
        )
    rng = np.random.default_rng(seed)
    rows = np.arange(phi.shape[0])
    accuracies = []
    for _ in range(num_samples):
        flipped = rows ^ np.repeat(rng.random(phi.shape[0] // 2) < 0.5, 2)
        swapped = phi[flipped]
        attack = ulira(swapped, forgot_mask, swapped, unseen_mask, **fit_options)
        accuracies.append(attack["accuracy"])
    return np.array(accuracies)
