"""The comparison rule of the regression pins (``tests/_pinning.py``), on hand-made records."""

from __future__ import annotations

import math

import pytest
from _pinning import EPS, TOLERANCE, assert_matches_pin, deviations

# one leaf of norm 5 (3, 4 and zeros), one of pure round-off next to it
WANT = {
    "params": [[7.0, 25.0, 3.0, 4.0, 0.0], [8.8e-9, 3.5e-17, 4.1e-9, 4.3e-9, 1.0e-10]],
    "mask": [[2.0, 2.0, 1.0, 0.0, 1.0]],
    "log": [2.5, 0.5],
}


def _with(**changes):
    return {**WANT, **changes}


def test_a_sign_flip_of_a_value_near_zero_is_measured_against_its_leaf():
    # an L1 penalty leaves entries oscillating about 0: 4.36e-6 against -4.36e-6 in a leaf
    # of norm 5 deviates by 1.7e-6 of it (an absolute 1e-6 once failed it)
    params = [[7.0, 25.0, 3.0, 4.0, -4.36e-6], WANT["params"][1]]
    dev = deviations(_with(params=params), WANT)["params"]
    assert dev == pytest.approx(4.36e-6 / 5)
    assert_matches_pin(_with(params=params), WANT, "case")


def test_a_round_off_leaf_is_floored_at_the_tree_round_off():
    # its values double, yet they stay below float32 round-off of the tree (norm 5)
    noise = [[1.76e-8, 1.4e-16, 8.2e-9, 8.6e-9, 2.0e-10]]
    dev = deviations(_with(params=[WANT["params"][0], *noise]), WANT)["params"]
    assert dev == pytest.approx(8.8e-9 / (EPS * 5), rel=1e-3) and dev < TOLERANCE


def test_a_real_change_fails_and_exact_entries_must_be_equal():
    moved = [[7.0, 25.0, 3.0, 4.05, 0.0], WANT["params"][1]]  # 1 % of the leaf's norm
    assert deviations(_with(params=moved), WANT)["params"] == pytest.approx(0.01)
    with pytest.raises(AssertionError, match="params"):
        assert_matches_pin(_with(params=moved), WANT, "case")
    flipped = [[2.0, 2.0, 1.0, 1.0, 0.0]]  # one mask entry moved: never a rounding
    assert deviations(_with(mask=flipped), WANT)["mask"] == math.inf
    with pytest.raises(AssertionError, match="mask"):
        assert_matches_pin(_with(mask=flipped), WANT, "case")
    assert deviations(_with(log=[2.5 * (1 + 1e-3), 0.5 + 1e-3]), WANT)["log"] == pytest.approx(
        2.5e-3
    )
    with pytest.raises(AssertionError, match="pinned keys"):
        deviations({"params": WANT["params"]}, WANT)
