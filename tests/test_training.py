"""Plain SGD training (scissorhands_jax._training): the SGD builders of the package refuse
a momentum outside [0, 1), whichever builds the optimiser."""

from __future__ import annotations

import pytest

import scissorhands_jax as shs


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1, float("nan")])
def test_every_sgd_builder_refuses_a_momentum_outside_0_1(momentum):
    # momentum 1.5 once trained to a loss of 2.5e13 and saved the model as complete
    from scissorhands_jax.baselines import HYPERPARAMETERS

    with pytest.raises(ValueError, match="momentum must be"):
        shs.sgd(0.1, momentum=momentum)
    with pytest.raises(ValueError, match="momentum must be"):
        shs.step_decay_sgd(0.1, steps_per_epoch=3, momentum=momentum)
    with pytest.raises(ValueError, match="momentum must be"):
        HYPERPARAMETERS["ft"].of("ft", {"momentum": momentum})
    shs.sgd(0.1, momentum=0.0), shs.sgd(0.1, momentum=0.99)  # the edges inside pass
