"""Diffusion models and Scissorhands for generation.

A class-conditional DDPM (noise schedule, ε-prediction loss with classifier-free
guidance label dropout, DDPM/DDIM samplers), Scissorhands for it (saliency of the
ε-loss on the forget class, global top-k, re-initialisation inside chosen blocks, repair
by :math:`L_r - \\lambda L_f` or by an anchor mapping, optional projection), the
baselines Retrain, FT and SalUn, generation metrics (forgotten-class share, accuracy on
the other classes, Fréchet distance, the FID Inception-v3 features, PNG grids), and the
pieces of the resumable ``diffusion-train`` pipeline (data views, step-indexed training
with an EMA).
"""

from scissorhands_jax.diffusion.baselines import (
    finetune_diffusion,
    retrain_diffusion,
    salun_diffusion,
)
from scissorhands_jax.diffusion.data import GenerationData, load_generation_data
from scissorhands_jax.diffusion.grid import image_grid, save_png, side_by_side
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
    diffusion_model,
    diffusion_source,
    epsilon_loss,
    guided_eps,
)
from scissorhands_jax.diffusion.resumable import (
    DiffusionTrainState,
    ema_update,
    fit_diffusion_resumable,
    init_train_state,
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
from scissorhands_jax.diffusion.training import adam_direction, run_steps, train_diffusion
from scissorhands_jax.diffusion.unlearn import (
    DiffusionUnlearnResult,
    resolve_eligible,
    scissorhands_diffusion,
    trim_diffusion,
)
from scissorhands_jax.models.unet import UNET_PRESETS, UNet

__all__ = [
    "DiffusionModel",
    "DiffusionTrainState",
    "DiffusionUnlearnResult",
    "GenerationData",
    "NoiseSchedule",
    "NoisedSource",
    "UNET_PRESETS",
    "UNet",
    "adam_direction",
    "cosine_betas",
    "ddim_timesteps",
    "diffusion_model",
    "diffusion_source",
    "ema_update",
    "epsilon_loss",
    "feature_extractor",
    "feature_statistics",
    "finetune_diffusion",
    "fit_diffusion_resumable",
    "frechet_distance",
    "frechet_distance_features",
    "generation_metrics",
    "guided_eps",
    "image_grid",
    "inception_fid_features",
    "init_train_state",
    "linear_betas",
    "load_generation_data",
    "make_schedule",
    "predict_x0",
    "q_posterior",
    "q_sample",
    "resolve_eligible",
    "retrain_diffusion",
    "run_steps",
    "salun_diffusion",
    "sample",
    "save_png",
    "scissorhands_diffusion",
    "side_by_side",
    "train_diffusion",
    "trim_diffusion",
]
