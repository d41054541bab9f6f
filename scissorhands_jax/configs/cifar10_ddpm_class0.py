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
  C=cifar10_ddpm_class0 RUN=runs/cifar10_ddpm_class0
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

# Only what differs from the defaults in scissorhands_jax.experiment.config (the release's
# CIFAR-10 random-10 % setting, SalUn's CIFAR-10 DDPM); SMOKE only what differs from CONFIG.
CONFIG = {
    "diffusion": {},
    "data": {"name": "cifar10", "random_flip": True},
    "classifier": {"model": "resnet34"},
    "scissorhands_anchor": {"prune_num": 10, "anchor": 1},
}

SMOKE = {
    "data": {"limit_train": 512, "limit_test": 256},
    "unet": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1},
    "diffusion": {"schedule": {"num_timesteps": 100}},
    "train": {"steps": 4, "batch_size": 32, "log_every": 2, "checkpoint_every": 2},
    "retrain": {"steps": 4, "batch_size": 32, "log_every": 2, "checkpoint_every": 2},
    "classifier": {"model": "resnet18", "width": 8, "epochs": 1, "batch_size": 64},
    "sample": {"num_steps": 5, "per_class": 4, "batch_size": None},
    "scissorhands": {"steps": 2, "batch_size": 32, "sparsity": 0.99},
    "scissorhands_anchor": {"steps": 2, "batch_size": 32, "prune_num": 1},
    "salun": {"steps": 2, "batch_size": 32},
    "finetune": {"steps": 2, "batch_size": 32},
}
