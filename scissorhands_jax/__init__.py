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
    "CheckpointError": "scissorhands_jax.checkpoint",
    "Checkpoints": "scissorhands_jax.checkpoint",
    "forget_memory": "scissorhands_jax.memory",
    "DigitsCNN": "scissorhands_jax.models.digits",
    "DigitsCNNNNX": "scissorhands_jax.models.digits",
    "Model": "scissorhands_jax.models.adapters",
    "linen_model": "scissorhands_jax.models.adapters",
    "nnx_model": "scissorhands_jax.models.adapters",
    "bind_state": "scissorhands_jax.models.adapters",
    "predict_probs": "scissorhands_jax.models.adapters",
    "ProjectionState": "scissorhands_jax.projection",
    "gem_projection": "scissorhands_jax.projection",
    "orthogonal_projection": "scissorhands_jax.projection",
    "projection_state": "scissorhands_jax.stored_memory",
    "set_memory": "scissorhands_jax.stored_memory",
    "PRESETS": "scissorhands_jax.reinit",
    "Eligibility": "scissorhands_jax.reinit",
    "eligible_mask": "scissorhands_jax.reinit",
    "is_norm_path": "scissorhands_jax.reinit",
    "leaf_paths": "scissorhands_jax.reinit",
    "masked_reinit": "scissorhands_jax.reinit",
    "path_regex": "scissorhands_jax.reinit",
    "release_bn_parity": "scissorhands_jax.reinit",
    "torch_default_init": "scissorhands_jax.reinit",
    "repair": "scissorhands_jax.repairing",
    "repair_step": "scissorhands_jax.repairing",
    "repair_tx": "scissorhands_jax.repairing",
    "TrainState": "scissorhands_jax.loop",
    "run_steps": "scissorhands_jax.loop",
    "fit_resumable": "scissorhands_jax.resumable",
    "step_decay_sgd": "scissorhands_jax.resumable",
    "connection_sensitivity": "scissorhands_jax.saliency",
    "kth_smallest": "scissorhands_jax.saliency",
    "top_k_mask": "scissorhands_jax.saliency",
    "top_k_threshold": "scissorhands_jax.saliency",
    "ScissorhandsResult": "scissorhands_jax.method",
    "scissorhands": "scissorhands_jax.method",
    "trim": "scissorhands_jax.trimming",
    "fresh_values": "scissorhands_jax.trimming",
    "TrimSettings": "scissorhands_jax.settings",
    "RepairSettings": "scissorhands_jax.settings",
    "AdamRepairSettings": "scissorhands_jax.settings",
    "ProjectionSettings": "scissorhands_jax.settings",
    "TrainingSettings": "scissorhands_jax.settings",
    "CalibrationSettings": "scissorhands_jax.settings",
    "calibrate_temperature": "scissorhands_jax.calibration",
    "with_precision": "scissorhands_jax.precision",
    "fit": "scissorhands_jax.training",
    "sgd": "scissorhands_jax.training",
}
_SUBMODULES = ("baselines", "data", "diffusion", "metrics", "models", "parallel", "population")

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES, _SUBMODULES)

__all__ = sorted([*_ATTRIBUTES, *_SUBMODULES])
