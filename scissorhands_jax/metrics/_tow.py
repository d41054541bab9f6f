"""The tug-of-war score (ToW): one number for how closely a model matches Retrain.

Zhao, Kurmanji, Bărbulescu, Triantafillou & Triantafillou, "What makes unlearning hard
and what to do about it", NeurIPS 2024 (arXiv 2406.01257). Where Avg. Gap averages the
differences, ToW multiplies their complements, so one large miss on any of the forget,
retain or test accuracy pulls the whole score down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TOW_KEYS = ("UA", "RA", "TA")
"""The accuracies ToW compares (UA = 100 - forget accuracy, so its differences equal the
forget-accuracy differences)."""


def tow(
    row: Mapping[str, float],
    reference: Mapping[str, float],
    keys: Sequence[str] = TOW_KEYS,
) -> float:
    r"""The tug-of-war score of a method's row against the Retrain row.

    .. math::

        \mathrm{ToW} = \prod_{k \in \{f, r, t\}}
            \left(1 - \left|A_k(\theta_u) - A_k(\theta_r)\right|\right)

    with :math:`A_f, A_r, A_t` the accuracies (in [0, 1]) on the forget, retain and test
    sets of the unlearned model :math:`\theta_u` and of Retrain :math:`\theta_r`
    (Zhao et al. 2024, Eq. 1). Rows hold percentages (``UA``, ``RA``, ``TA``), divided
    by 100 here. ToW lies in [0, 1]; 1 means the accuracies equal Retrain's; higher is
    better.

    Example:
        >>> tow({"UA": 10.0, "RA": 90.0, "TA": 80.0}, {"UA": 0.0, "RA": 100.0, "TA": 80.0})
        0.81

    Args:
        row: The method's metrics in percent.
        reference: Retrain's metrics in percent.
        keys: The three accuracy keys.

    Returns:
        ToW as a Python float in [0, 1].

    Raises:
        KeyError: If a key is missing.
        ValueError: If ``keys`` is empty or a value lies outside [0, 100].
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("tow needs at least one accuracy key; got none.")
    for name, mapping in (("row", row), ("reference", reference)):
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise KeyError(f"{name} is missing metric(s) {missing}; it has {sorted(mapping)}.")
        bad = {k: mapping[k] for k in keys if not 0.0 <= float(mapping[k]) <= 100.0}
        if bad:
            raise ValueError(f"{name} accuracies must be percentages in [0, 100]; got {bad}.")
    factors = [1.0 - abs(float(row[k]) - float(reference[k])) / 100.0 for k in keys]
    return float(np.round(np.prod(factors), 12))
