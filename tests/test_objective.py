"""The objective-driven training (scissorhands_jax._objective): its arguments checked
before any work."""

from __future__ import annotations

import jax
import pytest


def test_train_objective_refuses_a_negative_or_non_finite_lr():
    from scissorhands_jax._objective import adam_tx, train_objective

    for lr in (-1e-4, 0.0, float("nan")):
        with pytest.raises(ValueError, match="lr must be"):
            train_objective(None, {}, retain=None, key=jax.random.key(0), steps=1, lr=lr,
                            tx=adam_tx())  # fmt: skip
