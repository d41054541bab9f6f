"""The comparison rule of the regression pins (``tests/_pinning.py``), on hand-made records."""

from __future__ import annotations

import math

import pytest
from _pinning import TOLERANCE, assert_matches_pin, deviations

# a tree of norm 5: one leaf (3, 4, 0, ...) and one that training left at round-off
WANT = {
    "params": [[7.0, 25.0, 3.0, 4.0, 0.0], [8.8e-9, 3.5e-17, 4.1e-9, 4.3e-9, 1.0e-10]],
    "mask": [[2.0, 2.0, 1.0, 0.0, 1.0]],
    "log": [2.5, 0.5],
}


def _with(**changes):
    return {**WANT, **changes}


def test_round_off_that_flips_a_sign_is_measured_against_the_tree():
    # an L1 penalty keeps entries oscillating about 0: 4.36e-6 against -4.36e-6 once
    # failed an absolute 1e-6, and relative to its own (tiny) leaf it moves by 200 %
    params = [[7.0, 25.0, 3.0, 4.0, -4.36e-6], [-8.8e-9, 3.5e-17, -4.1e-9, 4.3e-9, 0.0]]
    dev = deviations(_with(params=params), WANT)["params"]
    assert dev == pytest.approx(4.36e-6 / 5)
    assert_matches_pin(_with(params=params), WANT, "case")


def test_a_real_change_fails_and_exact_entries_must_be_equal():
    moved = [[7.0, 25.0, 3.0, 4.0, 0.0], [8.8e-9, 3.5e-17, 4.1e-9, 4.3e-9, 5e-3]]
    assert deviations(_with(params=moved), WANT)["params"] == pytest.approx(1e-3)
    assert 1e-3 > TOLERANCE
    with pytest.raises(AssertionError, match="params"):
        assert_matches_pin(_with(params=moved), WANT, "case")
    flipped = [[2.0, 2.0, 1.0, 1.0, 0.0]]  # one mask entry moved: never a rounding
    assert deviations(_with(mask=flipped), WANT)["mask"] == math.inf
    with pytest.raises(AssertionError, match="mask"):
        assert_matches_pin(_with(mask=flipped), WANT, "case")
    log = [2.5 * (1 + 1e-3), 0.5 + 1e-3]  # relative to the loss, or to 1 below it
    assert deviations(_with(log=log), WANT)["log"] == pytest.approx(1e-3)
    with pytest.raises(AssertionError, match="pinned keys"):
        deviations({"params": WANT["params"]}, WANT)
