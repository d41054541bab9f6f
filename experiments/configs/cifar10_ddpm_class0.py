"""CIFAR-10, class 0 (airplane) forgotten by a class-conditional DDPM (accelerator setting).

Reproduces: SalUn's DDPM class-forgetting experiment (Fan et al., ICLR 2024; code
OPTML-Group/Unlearn-Saliency, DDPM/configs/cifar10_train.yml and
cifar10_saliency_unlearn.yml), with Scissorhands (Wu & Harandi, ECCV 2024) added in the
way its release treats Stable Diffusion (SD/shs_cls.py: guided saliency, re-init of the
self-attention of two up-path blocks, Adam on L_r - lambda*L_f, no projection). The
Scissorhands paper has no CIFAR-10 DDPM table: its numbers here are this project's
choices, scaled from the release's SD class setting (Imagenette: Adam 2e-5, 3 epochs,
sparsity 0.999, lambda 0.1, attn1 of output blocks 4 and 7).

Settings taken from the releases:
  SalUn DDPM (train):  UNet ch 128, ch_mult (1, 2, 2, 2), 2 res blocks, attention at
                       16x16, dropout 0.1, label dropout 0.1; linear betas 1e-4..0.02,
                       T = 1000; Adam 2e-4, batch 128, 800k iterations, grad clip 1.0,
                       EMA 0.9999, random flips.
  SalUn (unlearn):     mask = top 50 % of |grad| of the eps-loss on class 0 with the
                       guided prediction (cond_scale 2); RL: eps(x_t, c_f) -> sg
                       eps(x_t, (c_f + 1) % 10); loss = L_f + alpha * L_r with alpha 1e-3
                       on a retain loss summed over the 3,072 pixel values (= 3.07 on the
                       mean loss used here); Adam 1e-4, batch 128, 500 iterations, clip 1.
  SalUn (evaluation):  DDIM sampling with cond_scale 2; 500 samples of the forgotten
                       class judged by a CIFAR-10 ResNet-34 (UA = share NOT classified
                       as the class); FID of 5,000 samples per remaining class against
                       the CIFAR-10 train images without the class.
  Scissorhands (SD):   saliency on the guided prediction (1 + 7.5) eps_c - 7.5 eps_u,
                       i.e. s = 8.5 here; prune_num 1; re-init trunc_normal(std 0.02),
                       biases 0; Adam on all UNet weights; L_r - lambda * L_f.

Commands (add --smoke to each for a run of seconds on a small UNet and 512 images):
  C=experiments/configs/cifar10_ddpm_class0.py RUN=runs/cifar10_ddpm_class0
  scissorhands prepare cifar10 --data-dir DATA
  scissorhands diffusion-train $C --data-dir DATA --out $RUN     # original, retrain, judge
  scissorhands diffusion-unlearn $C --data-dir DATA --run $RUN --method scissorhands
  scissorhands diffusion-unlearn $C --data-dir DATA --run $RUN --method salun
  scissorhands diffusion-evaluate $C --data-dir DATA --run $RUN --inception-weights W.npz
(diffusion-train checkpoints every train.checkpoint_every steps; after a preemption, the
same command with --resume continues to the same bits. --inception-weights takes the
.npz of python -m scissorhands_jax.diffusion.convert_inception; without it the Fréchet
distance is in the judge's features only.)

This project's choices where the releases leave one open: the judge is a CIFAR ResNet-34
trained here on the same training split (SGD 0.1, 30 epochs, crop + flip; SalUn uses a
pre-trained ResNet-34); 500 DDIM samples per class with guidance 2 for every model
(SalUn: 5,000 per remaining class for its FID); Scissorhands' sparsity 0.999 keeps the
top 0.1 % of the 36M parameters, of which only those in the up-path attention change.

Expected:  not measured by this project (its machines have no GPU). Training dominates:
           800k iterations of a 36M-parameter UNet (twice: original and retrain); each
           unlearning run is 500 steps.
"""

CONFIG = {
    "data": {
        "name": "cifar10",
        "data_dir": None,
        "forget_class": 0,  # airplane
        "image_size": None,  # 32x32
        "random_flip": True,
        "limit_train": None,
        "limit_test": None,
    },
    "unet": {
        "ch": 128,
        "ch_mult": [1, 2, 2, 2],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.1,
        "num_heads": 1,
        "norm_groups": 32,
    },
    "diffusion": {
        "schedule": {"kind": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "p_uncond": 0.1,
    },
    "train": {
        "steps": 800_000,
        "lr": 2e-4,
        "grad_clip": 1.0,
        "batch_size": 128,
        "ema_decay": 0.9999,
        "seed": 0,
        "log_every": 1000,
        "checkpoint_every": 5000,
        "keep": 2,
    },
    "retrain": {
        "steps": 800_000,
        "lr": 2e-4,
        "grad_clip": 1.0,
        "batch_size": 128,
        "ema_decay": 0.9999,
        "seed": 0,
        "log_every": 1000,
        "checkpoint_every": 5000,
        "keep": 2,
    },
    "classifier": {
        "model": "resnet34",
        "width": 64,
        "epochs": 30,
        "lr": 0.1,
        "milestones": [15, 25],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "augment": True,
        "seed": 0,
        "checkpoint_every": 1000,
        "keep": 2,
    },
    "sample": {
        "method": "ddim",
        "num_steps": 100,
        "guidance_scale": 2.0,
        "eta": 0.0,
        "batch_size": 512,
        "per_class": 500,
        "seed": 0,
        "grid_per_class": 8,
    },
    "scissorhands": {
        "eligible": "up_attn",
        "sparsity": 0.999,
        "prune_num": 1,
        "saliency_guidance": 8.5,
        "reinit": "trunc_normal",
        "objective": "contrast",
        "anchor": None,
        "lam": 0.1,
        "lr": 2e-5,
        "steps": 500,
        "batch_size": 128,
        "grad_clip": None,
        "trainable": None,
        "projection": "none",
        "margin": 0.5,
        "eps": 1e-3,
        "memory_num": 1,
        "memory_every": 50,
        "log_every": 50,
        "seed": 0,
    },
    "scissorhands_anchor": {  # the release's nudity recipe, with class 1 as the anchor
        "eligible": "up_attn",
        "sparsity": 0.995,
        "prune_num": 10,
        "saliency_guidance": None,
        "reinit": "model",
        "objective": "anchor",
        "anchor": 1,
        "lam": 0.1,
        "lr": 1e-5,
        "steps": 500,
        "batch_size": 128,
        "grad_clip": None,
        "trainable": None,
        "projection": "none",
        "margin": 0.5,
        "eps": 1e-3,
        "memory_num": 1,
        "memory_every": 50,
        "log_every": 50,
        "seed": 0,
    },
    "salun": {
        "mask_ratio": 0.5,
        "saliency_guidance": 2.0,
        "mask_batches": 1,
        "anchor": "next",
        "alpha": 1e-3 * 3072,  # SalUn's alpha on its summed retain loss, as a mean-loss weight
        "lr": 1e-4,
        "steps": 500,
        "batch_size": 128,
        "grad_clip": 1.0,
        "log_every": 50,
        "seed": 0,
    },
    "finetune": {"lr": 1e-4, "steps": 500, "batch_size": 128, "grad_clip": 1.0, "seed": 0},
    "eval": {"fid_features": None},
}

_TINY_GENERATOR = {"steps": 4, "batch_size": 32, "log_every": 2, "checkpoint_every": 2}
_TINY_REPAIR = {"steps": 2, "batch_size": 32}

SMOKE = {  # --smoke: 512 images, a small UNet, a few steps of everything
    "data": {"limit_train": 512, "limit_test": 256},
    "unet": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16]},
    "diffusion": {"schedule": {"num_timesteps": 100}},
    "train": _TINY_GENERATOR,
    "retrain": _TINY_GENERATOR,
    "classifier": {"model": "resnet18", "width": 8, "epochs": 1, "batch_size": 64},
    "sample": {"num_steps": 5, "per_class": 4, "batch_size": None},
    "scissorhands": {**_TINY_REPAIR, "sparsity": 0.99},
    "scissorhands_anchor": {**_TINY_REPAIR, "prune_num": 1},
    "salun": _TINY_REPAIR,
    "finetune": _TINY_REPAIR,
}
