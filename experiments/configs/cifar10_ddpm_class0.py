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

Command (no runner for CIFAR-10 in this project yet: the generate-demo command runs the
same library calls on digits); on an accelerator, with CIFAR-10 as float arrays in
[-1, 1] (e.g. from tfds):
  import jax, scissorhands_jax as shs
  from experiments.configs.cifar10_ddpm_class0 import CONFIG as C
  d = shs.diffusion
  model = d.diffusion_model(d.UNet(**C["unet"]), image_shape=(32, 32, 3), num_classes=10,
      schedule=d.make_schedule(**C["diffusion"]["schedule"]), p_uncond=C["diffusion"]["p_uncond"])
  params, _ = d.train_diffusion(model, model.init(jax.random.key(0))[0],
      d.diffusion_source(train, 128), key=jax.random.key(1), **C["train"])
  res = d.scissorhands_diffusion(model, params, retain=retain, forget=forget,
      key=jax.random.key(2), **C["scissorhands"])
  sal = d.salun_diffusion(model, params, retain=retain, forget=forget,
      key=jax.random.key(3), **C["salun"])
  samples = d.sample(model, res.params, jax.random.key(4), labels, **C["sample"])

Expected:  not measured by this project (its machines have no GPU). Training dominates:
           800k iterations of a 36M-parameter UNet; each unlearning run is 500 steps.
"""

CONFIG = {
    "data": {"name": "cifar10", "forget_class": 0, "random_flip": True, "scale": "[-1, 1]"},
    "unet": {
        "num_classes": 10,
        "ch": 128,
        "ch_mult": (1, 2, 2, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
        "dropout": 0.1,
        "num_heads": 1,
        "norm_groups": 32,
    },
    "diffusion": {
        "schedule": {"kind": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "p_uncond": 0.1,
    },
    "train": {"steps": 800_000, "lr": 2e-4, "grad_clip": 1.0},  # batch 128, EMA 0.9999 in SalUn
    "sample": {"method": "ddim", "num_steps": 100, "guidance_scale": 2.0, "batch_size": 512},
    "scissorhands": {
        "eligible": "up_attn",
        "sparsity": 0.999,
        "prune_num": 1,
        "saliency_guidance": 8.5,
        "reinit": "trunc_normal",
        "objective": "contrast",
        "lam": 0.1,
        "lr": 2e-5,
        "steps": 500,
        "batch_size": 128,
        "grad_clip": None,
        "projection": "none",
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
        "projection": "none",
    },
    "salun": {
        "mask_ratio": 0.5,
        "saliency_guidance": 2.0,
        "anchor": "next",
        "alpha": 1e-3 * 3072,  # SalUn's alpha on its summed retain loss, as a mean-loss weight
        "lr": 1e-4,
        "steps": 500,
        "batch_size": 128,
        "grad_clip": 1.0,
    },
    "metrics": ["forget_share", "forget_prob", "forget_entropy", "other_acc", "frechet"],
}
