"""The audit's protocols: models and populations of the right shapes (fast; the audit of
each protocol itself is a measurement, not a test)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs
from scissorhands_jax.experiment import audit


def test_the_convolutional_protocol_builds_its_model_and_population():
    protocol = audit.PROTOCOLS["digits_cnn_small"]
    assert protocol.model == "digits_cnn" and protocol.weight_decay == 0.0
    model = audit.build_model(protocol)
    params, state = model.init(jax.random.key(0))
    shapes = jax.tree.map(np.shape, params)
    assert shapes["Conv_0"]["kernel"] == (3, 3, 1, 32)
    assert shapes["Dense_1"]["kernel"] == (128, 10)
    data = audit.make_population(protocol, 16, seed=0)
    assert data.pool["image"].shape == (200, 8, 8, 1) and data.pool["label"].shape == (200,)
    assert data.members.shape == (16, 200) and data.candidates.sum() == 40
    assert np.all(data.members.sum(1) == 100)  # each model trains on 100 digits ...
    assert np.all(data.forgets.sum(1) == 20)  # ... and forgets 20 of them
    assert np.all(data.members.sum(0) == 8)  # complementary pairs: every digit in half
    logits = model.logits(params, state, jnp.asarray(data.pool["image"][:5]))
    assert logits.shape == (5, 10)


@pytest.mark.parametrize("name", sorted(audit.PROTOCOLS))
def test_scissorhands_trims_all_but_the_first_layer(name):
    protocol = audit.PROTOCOLS[name]
    params, _ = audit.build_model(protocol).init(jax.random.key(0))
    eligible = audit.method_hyperparameters("scissorhands", protocol)["eligible"]
    mask = shs.eligible_mask(params, eligible)
    first = {"digits_cnn": "Conv_0", "digits_mlp": "hidden1"}[protocol.model]
    for layer, leaves in mask.items():
        assert all(v == (layer != first) for v in jax.tree.leaves(leaves)), (layer, leaves)
