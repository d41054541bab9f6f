"""digits-10, class 0 forgotten by a small class-conditional DDPM: the offline pipeline.

Reproduces: the generation demo (scissorhands generate-demo runs this config) through
the resumable diffusion-train / diffusion-unlearn / diffusion-evaluate commands, so the
same steps as the CIFAR-10 DDPM config (the config cifar10_ddpm_class0) run on any machine:
scikit-learn's 8x8 digits (1,437 training images, no download) in [-1, 1]; a UNet with
16 base channels, levels 8x8 and 4x4, self-attention at 4x4 (177,553 parameters); T =
200 linear betas (the DDPM range scaled by 1000 / T), label dropout 0.1; Adam 2e-3, clip
1, batch 64, 1,000 steps, no EMA, for the original (all digits) and the retrain oracle
(without 0s); a DigitsCNN judge (SGD 0.05, 10 epochs). Unlearning, 100 steps each:
Scissorhands L_r - 0.1 L_f (lr 2e-4) and its anchor recipe (0 -> 1, lambda 1, lr 3e-4),
saliency of the guided (s = 2) eps-loss, sparsity 0.9, re-init inside the up-path
attention; SalUn (mask ratio 0.5, alpha 3.072, lr 1e-4); FT (lr 1e-4). Evaluation: 50
DDIM-25 samples per digit with guidance 2, the same initial noise for every model.

Commands (add --smoke to each for a run of seconds; scissorhands generate-demo --out $RUN
runs them all):
  C=digits_ddpm_class0 RUN=runs/digits_ddpm_class0
  scissorhands diffusion-train $C --out $RUN
  scissorhands diffusion-unlearn $C --run $RUN --method scissorhands
  scissorhands diffusion-unlearn $C --run $RUN --method scissorhands_anchor
  scissorhands diffusion-unlearn $C --run $RUN --method salun
  scissorhands diffusion-unlearn $C --run $RUN --method finetune
  scissorhands diffusion-evaluate $C --run $RUN

Expected: minutes on a 2-core CPU; see the diffusion pipeline section of the README for
the measured times and numbers.
"""

# Only what differs from the defaults in scissorhands_jax.experiment.config (SalUn's CIFAR-10 DDPM);
# SMOKE only what differs from CONFIG.
DDPM = {"steps": 1000, "lr": 0.002, "batch_size": 64, "ema_decay": None}
UNLEARN = {"sparsity": 0.9, "saliency_guidance": 2.0, "steps": 100, "batch_size": 64}
CONFIG = {
    "diffusion": {"schedule": {"num_timesteps": 200, "beta_start": 0.0005, "beta_end": 0.1}},
    "data": {"name": "digits10"},
    "unet": {
        "ch": 16,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [4],
        "dropout": 0.0,
        "norm_groups": 8,
    },
    "train": {**DDPM, "log_every": 250, "checkpoint_every": 250},
    "retrain": {**DDPM, "log_every": 250, "checkpoint_every": 250},
    "classifier": {
        "model": "digits_cnn",
        "epochs": 10,
        "lr": 0.05,
        "milestones": [],
        "batch_size": 64,
        "augment": False,
        "checkpoint_every": 100,
    },
    "sample": {"num_steps": 25, "batch_size": None, "per_class": 50},
    "scissorhands": {**UNLEARN, "reinit": "model", "lr": 0.0002},
    "scissorhands_anchor": {**UNLEARN, "lam": 1.0, "lr": 0.0003},
    "salun": {"alpha": 3.0, "steps": 100, "batch_size": 64},
    "finetune": {"steps": 100, "batch_size": 64},
}

SMOKE_DDPM = {"steps": 20, "log_every": 10, "checkpoint_every": 10}
SMOKE = {
    "train": SMOKE_DDPM,
    "retrain": SMOKE_DDPM,
    "classifier": {"epochs": 1},
    "sample": {"num_steps": 5, "per_class": 4},
    **{name: {"steps": 5} for name in ("scissorhands", "scissorhands_anchor", "salun", "finetune")},
}
