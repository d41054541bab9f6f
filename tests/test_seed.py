"""The seed bound (scissorhands_jax._seed): seeds are integers in [0, 2**31) in the
library, in configs and on the command line, so that no seed aliases another key."""

from __future__ import annotations

import numpy as np
import pytest

import scissorhands_jax as shs


@pytest.mark.parametrize("seed", [-1, 2**31, 2**32, True, 1.0, "0"])
def test_int_seeds_are_bounded_to_what_a_key_holds(seed):
    # jax.random.key(2**32) is key(0) and key(-1) is key(2**32 - 1): such seeds once
    # aliased other seeds silently
    from scissorhands_jax.data.splits import holdout_validation, select_forget_indices
    from scissorhands_jax.population import membership_matrix

    labels = np.arange(300) % 10
    calls = [
        lambda: shs.data.load_digits10("random10", seed),
        lambda: membership_matrix(seed, 2, 10),
        lambda: holdout_validation(labels, 0.1, seed),
        lambda: select_forget_indices(
            labels, np.arange(300), kind="random", fraction=0.1, seed=seed
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"seed.* must be an integer in \[0, 2\*\*31\)"):
            call()
    assert membership_matrix(np.int64(2**31 - 1), 2, 10).shape == (2, 10)


def test_the_seed_bound_is_the_same_on_the_command_line_in_configs_and_in_the_library():
    import argparse

    from scissorhands_jax._seed import check_seed
    from scissorhands_jax.commands import _args
    from scissorhands_jax.experiment import rules

    largest = 2**31 - 1  # the bound by hand: 31 bits
    assert _args.seed(str(largest)) == largest and check_seed("seed", largest) == largest
    assert rules.SEED.ok(largest)
    with pytest.raises(argparse.ArgumentTypeError, match=r"2\*\*31"):
        _args.seed(str(largest + 1))
    with pytest.raises(ValueError):
        check_seed("seed", largest + 1)
    assert not rules.SEED.ok(largest + 1)


def test_seeds_are_what_the_generators_take():
    import jax

    largest = 2**31 - 1  # seed + offsets in the thousands stay distinct 32-bit keys
    assert rules_ok("train", "seed", largest) and not rules_ok("train", "seed", largest + 1)
    jax.random.key(largest)  # the largest allowed seed is a valid key and numpy seed
    np.random.default_rng(largest)


def rules_ok(section: str, key: str, value) -> bool:
    from scissorhands_jax.experiment.rules import CLASSIFIER_RULES

    return CLASSIFIER_RULES[section][key].ok(value)
