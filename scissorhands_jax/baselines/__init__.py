"""The unlearning methods of the paper's comparison behind one interface.

Every method is ``unlearn(model, params, model_state, *, retain, forget, key,
progress=False, **hyperparameters) -> UnlearnResult(params, model_state, log)``: the
original model as a :class:`Model` and its pytrees (not modified), retain and forget
data as pytrees of arrays with a leading example axis (a method checks the set it does
not use, and never reads it), a PRNG key (the result is a pure function of it), progress
bars on request, and the method's hyperparameters as keywords. Each baseline declares
its hyperparameters as a frozen dataclass (:data:`HYPERPARAMETERS`) holding their only
defaults: the release settings of the baselines, or the cited paper's where the release
is silent. Every method raises ValueError for an unknown hyperparameter, a bad value or
bad data (a batch source, an empty set, a missing entry) before any work, and
FloatingPointError when its loss becomes non-finite. With ``params`` placed on a mesh
(:func:`scissorhands_jax.parallel.on_mesh`) they run data-parallel on it.
:data:`METHODS` maps the names of the comparison to the functions.
"""

from scissorhands_jax._choices import METHOD_NAMES
from scissorhands_jax.baselines._boundary_expanding import (
    BoundaryExpandingHyperparameters,
    boundary_expanding,
)
from scissorhands_jax.baselines._boundary_shrinking import (
    BoundaryShrinkingHyperparameters,
    boundary_shrinking,
)
from scissorhands_jax.baselines._common import (
    Hyperparameters,
    LabelledHyperparameters,
    SGDHyperparameters,
    UnlearnResult,
    check_data,
    freeze,
)
from scissorhands_jax.baselines._finetune import FinetuneHyperparameters, finetune
from scissorhands_jax.baselines._gradient_ascent import (
    GradientAscentHyperparameters,
    gradient_ascent,
)
from scissorhands_jax.baselines._influence import (
    InfluenceHyperparameters,
    influence_direction,
    influence_step,
    influence_unlearning,
)
from scissorhands_jax.baselines._l1_sparse import L1SparseHyperparameters, l1_sparse
from scissorhands_jax.baselines._random_labels import RandomLabelsHyperparameters, random_labels
from scissorhands_jax.baselines._retrain import RetrainHyperparameters, retrain
from scissorhands_jax.baselines._salun import SalunHyperparameters, salun
from scissorhands_jax.baselines._scissorhands import scissorhands
from scissorhands_jax.baselines._scrub import ScrubHyperparameters, scrub

METHODS = dict(
    zip(
        METHOD_NAMES,  # retrain ft ga rl l1_sparse salun iu be bs scrub scissorhands
        (retrain, finetune, gradient_ascent, random_labels, l1_sparse, salun,
         influence_unlearning, boundary_expanding, boundary_shrinking, scrub, scissorhands),
        strict=True,
    )
)  # fmt: skip
"""Method name (as in the comparison tables: ``scissorhands_jax._choices.METHOD_NAMES``,
which the command line reads without loading the methods) -> ``unlearn`` function."""

HYPERPARAMETERS: dict[str, type[Hyperparameters]] = {
    "retrain": RetrainHyperparameters,
    "ft": FinetuneHyperparameters,
    "ga": GradientAscentHyperparameters,
    "rl": RandomLabelsHyperparameters,
    "l1_sparse": L1SparseHyperparameters,
    "salun": SalunHyperparameters,
    "iu": InfluenceHyperparameters,
    "be": BoundaryExpandingHyperparameters,
    "bs": BoundaryShrinkingHyperparameters,
    "scrub": ScrubHyperparameters,
}
"""Method name -> the dataclass of its hyperparameters (every method but Scissorhands,
whose settings are the flat names of :mod:`scissorhands_jax._settings`)."""

__all__ = [
    "HYPERPARAMETERS",
    "METHODS",
    "BoundaryExpandingHyperparameters",
    "BoundaryShrinkingHyperparameters",
    "FinetuneHyperparameters",
    "GradientAscentHyperparameters",
    "Hyperparameters",
    "InfluenceHyperparameters",
    "L1SparseHyperparameters",
    "LabelledHyperparameters",
    "RandomLabelsHyperparameters",
    "RetrainHyperparameters",
    "SGDHyperparameters",
    "SalunHyperparameters",
    "ScrubHyperparameters",
    "UnlearnResult",
    "boundary_expanding",
    "boundary_shrinking",
    "check_data",
    "finetune",
    "freeze",
    "gradient_ascent",
    "influence_direction",
    "influence_step",
    "influence_unlearning",
    "l1_sparse",
    "random_labels",
    "retrain",
    "salun",
    "scissorhands",
    "scrub",
]
