"""Scissorhands machine unlearning in JAX (Wu & Harandi, ECCV 2024).

Trim: score every parameter by connection sensitivity to the forget data and
re-initialise the top-k % inside chosen layers. Repair: fine-tune on retain minus
lambda * forget loss under a GEM projection that keeps each step from re-learning the
forget data. Every piece is a pure function on pytrees; the projections are optax
gradient transformations.

Importing the package loads only jax, optax, flax and numpy; every name below is
loaded on first use (the diffusion code, the baselines, the data sets and orbax only
when asked for).
"""

from scissorhands_jax._lazy import lazy_attributes

__version__ = "0.1.0"

_ATTRIBUTES = {
    "CheckpointError": "scissorhands_jax._checkpoint",
    "Checkpoints": "scissorhands_jax._checkpoint",
    "forget_memory": "scissorhands_jax._memory",
    "DigitsCNN": "scissorhands_jax.models.digits",
    "DigitsCNNNNX": "scissorhands_jax.models.digits",
    "Model": "scissorhands_jax.models.adapters",
    "linen_model": "scissorhands_jax.models.adapters",
    "nnx_model": "scissorhands_jax.models.adapters",
    "bind_state": "scissorhands_jax.models.adapters",
    "predict_probs": "scissorhands_jax.models.adapters",
    "ProjectionState": "scissorhands_jax._projection",
    "gem_projection": "scissorhands_jax._projection",
    "orthogonal_projection": "scissorhands_jax._projection",
    "projection_state": "scissorhands_jax._stored_memory",
    "set_memory": "scissorhands_jax._stored_memory",
    "PRESETS": "scissorhands_jax._reinit",
    "Eligibility": "scissorhands_jax._reinit",
    "eligible_mask": "scissorhands_jax._reinit",
    "leaf_paths": "scissorhands_jax._reinit",
    "masked_reinit": "scissorhands_jax._reinit",
    "release_bn_parity": "scissorhands_jax._reinit",
    "repair": "scissorhands_jax._repair",
    "repair_step": "scissorhands_jax._repair",
    "repair_tx": "scissorhands_jax._repair",
    "TrainState": "scissorhands_jax._loop",
    "fit_resumable": "scissorhands_jax._resumable",
    "step_decay_sgd": "scissorhands_jax._resumable",
    "connection_sensitivity": "scissorhands_jax._saliency",
    "top_k_mask": "scissorhands_jax._saliency",
    "top_k_threshold": "scissorhands_jax._saliency",
    "ScissorhandsResult": "scissorhands_jax._method",
    "scissorhands": "scissorhands_jax._method",
    "trim": "scissorhands_jax._trim",
    "fresh_values": "scissorhands_jax._trim",
    "TrimSettings": "scissorhands_jax._settings",
    "RepairSettings": "scissorhands_jax._settings",
    "AdamRepairSettings": "scissorhands_jax._settings",
    "ProjectionSettings": "scissorhands_jax._settings",
    "TrainingSettings": "scissorhands_jax._settings",
    "CalibrationSettings": "scissorhands_jax._settings",
    "calibrate_temperature": "scissorhands_jax._calibration",
    "with_precision": "scissorhands_jax._precision",
    "fit": "scissorhands_jax._training",
    "sgd": "scissorhands_jax._training",
}
_SUBMODULES = ("baselines", "data", "diffusion", "metrics", "models", "parallel", "population")

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES, _SUBMODULES)

__all__ = sorted([*_ATTRIBUTES, *_SUBMODULES])
