"""Diffusion models and Scissorhands for generation.

What is specific to diffusion: a class-conditional DDPM (noise schedule, ε-prediction
loss with classifier-free guidance label dropout, DDPM/DDIM samplers), generation
metrics (forgotten-class share, accuracy on the other classes, Fréchet distance, the FID
Inception-v3 features, PNG grids) and the data views of the ``diffusion-train``
pipeline. Scissorhands for it (:func:`scissorhands_diffusion`, which takes the settings
dataclasses of the classifier method) and the baselines Retrain, FT and SalUn
(:data:`DIFFUSION_METHODS`, :data:`DIFFUSION_HYPERPARAMETERS`) are applications of the
core: the one :func:`~scissorhands_jax.trim`, the one training loop
(:mod:`scissorhands_jax._loop`) with the weighted-objective step of
:mod:`scissorhands_jax._objective`, and :func:`~scissorhands_jax.fit_resumable`. Every
method returns the classifiers' :class:`~scissorhands_jax.baselines.UnlearnResult`.
"""

from scissorhands_jax.diffusion.baselines import (
    DIFFUSION_HYPERPARAMETERS,
    DIFFUSION_METHODS,
    FinetuneDiffusionHyperparameters,
    RetrainDiffusionHyperparameters,
    SalunDiffusionHyperparameters,
    finetune_diffusion,
    retrain_diffusion,
    salun_diffusion,
    train_diffusion,
)
from scissorhands_jax.diffusion.data import GenerationData, load_generation_data
from scissorhands_jax.diffusion.grid import (
    annotate,
    class_labels,
    image_grid,
    save_png,
    side_by_side,
)
from scissorhands_jax.diffusion.metrics import (
    feature_extractor,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    generation_metrics,
    inception_fid_features,
)
from scissorhands_jax.diffusion.model import (
    DiffusionModel,
    NoisedSource,
    anchor_loss,
    diffusion_model,
    diffusion_source,
    epsilon_loss,
    guided_eps,
)
from scissorhands_jax.diffusion.sampler import ddim_timesteps, sample
from scissorhands_jax.diffusion.schedule import (
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    predict_x0,
    q_posterior,
    q_sample,
)
from scissorhands_jax.diffusion.unlearn import (
    DiffusionObjective,
    resolve_eligible,
    scissorhands_diffusion,
)
from scissorhands_jax.models.unet import UNET_PRESETS, UNet

__all__ = [
    "DIFFUSION_HYPERPARAMETERS",
    "DIFFUSION_METHODS",
    "DiffusionModel",
    "DiffusionObjective",
    "FinetuneDiffusionHyperparameters",
    "GenerationData",
    "NoiseSchedule",
    "NoisedSource",
    "RetrainDiffusionHyperparameters",
    "SalunDiffusionHyperparameters",
    "UNET_PRESETS",
    "UNet",
    "anchor_loss",
    "annotate",
    "class_labels",
    "cosine_betas",
    "ddim_timesteps",
    "diffusion_model",
    "diffusion_source",
    "epsilon_loss",
    "feature_extractor",
    "feature_statistics",
    "finetune_diffusion",
    "frechet_distance",
    "frechet_distance_features",
    "generation_metrics",
    "guided_eps",
    "image_grid",
    "inception_fid_features",
    "linear_betas",
    "load_generation_data",
    "make_schedule",
    "predict_x0",
    "q_posterior",
    "q_sample",
    "resolve_eligible",
    "retrain_diffusion",
    "salun_diffusion",
    "sample",
    "save_png",
    "scissorhands_diffusion",
    "side_by_side",
    "train_diffusion",
]
