"""The README's own-loop snippet unlearns on a model this package did not write.

The model is shaped like the CNN of Flax's official MNIST example (conv 32 3x3, relu,
avg_pool 2 -> conv 64 3x3, relu, avg_pool 2 -> flatten -> dense 256, relu -> dense 10,
its layers named ``conv1, conv2, linear1, linear2`` as there), trained briefly on the
embedded digits; the README's code from ``# Phase 1`` on then runs as written on it.
"""

import itertools
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scissorhands_jax as shs

README = Path(__file__).resolve().parents[1] / "README.md"


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        del train
        x = nn.avg_pool(nn.relu(nn.Conv(32, (3, 3), name="conv1")(x)), (2, 2), (2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(64, (3, 3), name="conv2")(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(256, name="linear1")(x.reshape(x.shape[0], -1)))
        return nn.Dense(10, name="linear2")(x)


def _unlearning_part() -> str:
    """The README's first python snippet from its trim phase on."""
    snippet = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    assert "# Phase 1" in snippet
    return snippet[snippet.index("# Phase 1") :]


@pytest.mark.slow  # tens of seconds: training the CNN, then eight repair epochs
def test_readme_loop_forgets_a_class_of_flax_mnist_cnn():
    split = shs.data.load_digits10("class0", seed=0)
    model = shs.linen_model(CNN(), jnp.zeros((1, 8, 8, 1)))
    params, state = model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(split.train, 64),
        key=jax.random.key(3),
        epochs=10,
        tx=optax.adam(2e-3),
    )

    def accuracy(p, data):
        probs = shs.predict_probs(model, p, state, data["image"])
        return float(np.mean(np.argmax(np.asarray(probs), -1) == data["label"]))

    before = {"forget": accuracy(params, split.forget), "test": accuracy(params, split.test)}
    assert before["forget"] > 0.9 and before["test"] > 0.9  # a model that knows the class
    names = {"jax": jax, "jnp": jnp, "optax": optax, "shs": shs, "itertools": itertools}
    names |= {
        "split": split,
        "retain": shs.data.array_source(split.retain, 64),
        "forget": shs.data.array_source(split.forget, 64),
        "model": model,
        "params": params,
        "state": state,
        "loss_fn": shs.bind_state(model, state),
    }
    exec(compile(_unlearning_part(), "README.md snippet 0 (from Phase 1)", "exec"), names)

    after = names["params"]
    assert not names["eligible"]["conv1"]["kernel"]  # the first convolution, by structure
    assert names["eligible"]["conv2"]["kernel"]
    assert int(shs.projection_state(names["opt_state"]).projected) > 0
    assert accuracy(after, split.forget) <= 0.05  # the class is forgotten
    assert accuracy(after, split.test) >= before["test"] - 0.05  # the rest is kept
