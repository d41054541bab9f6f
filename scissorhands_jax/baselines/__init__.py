"""The unlearning methods of the paper's comparison behind one interface.

Every method is ``unlearn(model, params, model_state, *, retain, forget, key, **hp) ->
UnlearnResult(params, model_state, log)``: the original model as a :class:`Model` and
its pytrees, retain and forget data as pytrees of arrays, a PRNG key (the result is a
pure function of it), and the method's hyperparameters as keywords whose defaults are
the release settings of the baselines (or the cited paper where the release is silent).
:data:`METHODS` maps the names of the comparison to the functions.
"""

from scissorhands_jax.baselines._common import UnlearnResult
from scissorhands_jax.baselines.boundary_expanding import boundary_expanding
from scissorhands_jax.baselines.boundary_shrinking import boundary_shrinking
from scissorhands_jax.baselines.finetune import finetune
from scissorhands_jax.baselines.gradient_ascent import gradient_ascent
from scissorhands_jax.baselines.influence import influence_unlearning
from scissorhands_jax.baselines.l1_sparse import l1_sparse
from scissorhands_jax.baselines.random_labels import random_labels
from scissorhands_jax.baselines.retrain import retrain
from scissorhands_jax.baselines.salun import freeze, salun
from scissorhands_jax.baselines.scissorhands import scissorhands
from scissorhands_jax.baselines.scrub import scrub

METHODS = {
    "retrain": retrain,
    "ft": finetune,
    "ga": gradient_ascent,
    "rl": random_labels,
    "l1_sparse": l1_sparse,
    "salun": salun,
    "iu": influence_unlearning,
    "be": boundary_expanding,
    "bs": boundary_shrinking,
    "scrub": scrub,
    "scissorhands": scissorhands,
}
"""Method name (as in the comparison tables) -> ``unlearn`` function."""

__all__ = [
    "METHODS",
    "UnlearnResult",
    "boundary_expanding",
    "boundary_shrinking",
    "finetune",
    "freeze",
    "gradient_ascent",
    "influence_unlearning",
    "l1_sparse",
    "random_labels",
    "retrain",
    "salun",
    "scissorhands",
    "scrub",
]
