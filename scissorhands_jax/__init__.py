"""Scissorhands machine unlearning in JAX (Wu & Harandi, ECCV 2024).

Trim: score every parameter by connection sensitivity to the forget data and
re-initialise the top-k % inside chosen layers. Repair: fine-tune on retain minus
lambda * forget loss under a GEM projection that keeps each step from re-learning the
forget data. Every piece is a pure function on pytrees; the projections are optax
gradient transformations.
"""

from scissorhands_jax import baselines, data, diffusion, metrics, models, parallel, population
from scissorhands_jax.checkpoint import CheckpointError, Checkpoints
from scissorhands_jax.memory import forget_memory
from scissorhands_jax.models import DigitsCNN, DigitsCNNNNX, Model, linen_model, nnx_model
from scissorhands_jax.models._adapters import bind_state, predict_probs
from scissorhands_jax.projection import ProjectionState, gem_projection, orthogonal_projection
from scissorhands_jax.reinit import (
    PRESETS,
    eligible_mask,
    is_norm_path,
    leaf_paths,
    masked_reinit,
    path_regex,
    torch_default_init,
)
from scissorhands_jax.repair import repair
from scissorhands_jax.resumable import TrainState, fit_resumable, step_decay_sgd
from scissorhands_jax.saliency import (
    connection_sensitivity,
    kth_smallest,
    top_k_mask,
    top_k_threshold,
)
from scissorhands_jax.scissorhands import (
    ScissorhandsResult,
    scissorhands,
    trim,
)
from scissorhands_jax.training import fit, sgd

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "DigitsCNN",
    "DigitsCNNNNX",
    "Model",
    "PRESETS",
    "ProjectionState",
    "ScissorhandsResult",
    "TrainState",
    "baselines",
    "bind_state",
    "connection_sensitivity",
    "data",
    "diffusion",
    "eligible_mask",
    "fit",
    "fit_resumable",
    "forget_memory",
    "gem_projection",
    "is_norm_path",
    "kth_smallest",
    "leaf_paths",
    "linen_model",
    "masked_reinit",
    "metrics",
    "models",
    "nnx_model",
    "orthogonal_projection",
    "parallel",
    "path_regex",
    "population",
    "predict_probs",
    "repair",
    "scissorhands",
    "sgd",
    "step_decay_sgd",
    "top_k_mask",
    "top_k_threshold",
    "torch_default_init",
    "trim",
]
