"""digits-10, class 0 forgotten by a small class-conditional DDPM: the offline pipeline.

Reproduces: the generation demo (scissorhands generate-demo, settings in
scissorhands_jax/diffusion/demo.py::DEMO_CONFIG) through the resumable
diffusion-train / diffusion-unlearn / diffusion-evaluate commands, so the same steps as
the CIFAR-10 DDPM config (experiments/configs/cifar10_ddpm_class0.py) run on any machine:
scikit-learn's 8x8 digits (1,437 training images, no download) in [-1, 1]; a UNet with
16 base channels, levels 8x8 and 4x4, self-attention at 4x4 (177,553 parameters); T =
200 linear betas (the DDPM range scaled by 1000 / T), label dropout 0.1; Adam 2e-3, clip
1, batch 64, 1,000 steps, no EMA, for the original (all digits) and the retrain oracle
(without 0s); a DigitsCNN judge (SGD 0.05, 10 epochs). Unlearning, 100 steps each:
Scissorhands L_r - 0.1 L_f (lr 2e-4) and its anchor recipe (0 -> 1, lambda 1, lr 3e-4),
saliency of the guided (s = 2) eps-loss, sparsity 0.9, re-init inside the up-path
attention; SalUn (mask ratio 0.5, alpha 3, lr 1e-4); FT (lr 1e-4). Evaluation: 50
DDIM-25 samples per digit with guidance 2, the same initial noise for every model.

The keys differ from the demo's (the original is initialised from fold_in(key(seed), 0)
here, from key(seed + 2) there), so the numbers match the demo's table statistically,
not bit for bit.

Commands (add --smoke to each for a run of seconds):
  C=experiments/configs/digits_ddpm_class0.py RUN=runs/digits_ddpm_class0
  scissorhands diffusion-train $C --out $RUN
  scissorhands diffusion-unlearn $C --run $RUN --method scissorhands
  scissorhands diffusion-unlearn $C --run $RUN --method scissorhands_anchor
  scissorhands diffusion-unlearn $C --run $RUN --method salun
  scissorhands diffusion-unlearn $C --run $RUN --method finetune
  scissorhands diffusion-evaluate $C --run $RUN

Expected: minutes on a 2-core CPU; see the diffusion pipeline section of the README for
the measured times and numbers.
"""

_GENERATOR = {
    "steps": 1000,
    "lr": 2e-3,
    "grad_clip": 1.0,
    "batch_size": 64,
    "ema_decay": None,
    "seed": 0,
    "log_every": 250,
    "checkpoint_every": 250,
    "keep": 2,
}
_SHS = {  # Scissorhands settings shared by both repair recipes
    "eligible": "up_attn",
    "sparsity": 0.9,
    "prune_num": 1,
    "saliency_guidance": 2.0,
    "reinit": "model",
    "steps": 100,
    "batch_size": 64,
    "grad_clip": None,
    "trainable": None,
    "projection": "none",
    "margin": 0.5,
    "eps": 1e-3,
    "memory_num": 1,
    "memory_every": 50,
    "log_every": 50,
    "seed": 0,
}

CONFIG = {
    "data": {
        "name": "digits10",
        "data_dir": None,
        "forget_class": 0,
        "image_size": None,  # 8x8; 16 upsamples (then use unet.ch_mult [1, 2, 2])
        "random_flip": False,  # digits must not be mirrored
        "limit_train": None,
        "limit_test": None,
    },
    "unet": {
        "ch": 16,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [4],
        "dropout": 0.0,
        "num_heads": 1,
        "norm_groups": 8,
    },
    "diffusion": {
        "schedule": {"kind": "linear", "num_timesteps": 200, "beta_start": 5e-4, "beta_end": 0.1},
        "p_uncond": 0.1,
    },
    "train": dict(_GENERATOR),
    "retrain": dict(_GENERATOR),
    "classifier": {
        "model": "digits_cnn",
        "width": 64,  # unused by the digits CNN
        "epochs": 10,
        "lr": 0.05,
        "milestones": [],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "augment": False,
        "seed": 0,
        "checkpoint_every": 100,
        "keep": 2,
    },
    "sample": {
        "method": "ddim",
        "num_steps": 25,
        "guidance_scale": 2.0,
        "eta": 0.0,
        "batch_size": None,
        "per_class": 50,
        "seed": 0,
        "grid_per_class": 8,
    },
    "scissorhands": {**_SHS, "objective": "contrast", "anchor": None, "lam": 0.1, "lr": 2e-4},
    "scissorhands_anchor": {  # L_r + lam * |eps(x_t, 0) - sg eps(x_t, 1)|^2
        **_SHS,
        "objective": "anchor",
        "anchor": "next",
        "lam": 1.0,
        "lr": 3e-4,
    },
    "salun": {
        "mask_ratio": 0.5,
        "saliency_guidance": 2.0,
        "mask_batches": 1,
        "anchor": "next",
        "alpha": 3.0,  # SalUn's 1e-3 on a loss summed over 3,072 pixels, on our mean loss
        "lr": 1e-4,
        "steps": 100,
        "batch_size": 64,
        "grad_clip": 1.0,
        "log_every": 50,
        "seed": 0,
    },
    "finetune": {"lr": 1e-4, "steps": 100, "batch_size": 64, "grad_clip": 1.0, "seed": 0},
    "eval": {"fid_features": None},
}

_SMOKE_GENERATOR = {"steps": 20, "log_every": 10, "checkpoint_every": 10}
_SMOKE_REPAIR = {"steps": 5}

SMOKE = {  # --smoke: seconds
    "train": _SMOKE_GENERATOR,
    "retrain": _SMOKE_GENERATOR,
    "classifier": {"epochs": 1},
    "sample": {"num_steps": 5, "per_class": 4},
    "scissorhands": _SMOKE_REPAIR,
    "scissorhands_anchor": _SMOKE_REPAIR,
    "salun": _SMOKE_REPAIR,
    "finetune": _SMOKE_REPAIR,
}
