"""The SD recipes' family base: the erasure baselines' settings (not a config).

ESD-u, the ESD paper's choice for nudity and objects (Gandikota et al., ICCV 2023): Adam
1e-5, 1000 iterations of one image, negative guidance 1, each x_t drawn by the trained
UNet's own DDIM from noise (50-step grid, guidance 3, stopped at a random step; x_t="noised"
trains on the forget latents noised instead). SalUn's SD release (Fan et al.,
ICLR 2024): mask ratio 0.5, 5 epochs over the forget images at batch 8, alpha 0.5. A recipe
sets only SalUn's pseudo prompt c'.
"""

ESD = {
    "lr": 1e-5,
    "iterations": 1000,
    "batch_size": 1,
    "negative_guidance": 1.0,
    "variant": "u",
    "x_t": "ddim",
    "ddim_steps": 50,
    "start_guidance": 3.0,
    "log_every": 100,
}

SALUN = {"lr": 1e-5, "epochs": 5, "batch_size": 8, "alpha": 0.5, "ratio": 0.5, "log_every": 10}

SMOKE = {
    "esd": {"iterations": 2, "batch_size": 2, "ddim_steps": 3, "log_every": 1},
    "salun": {"epochs": 1, "batch_size": 2, "log_every": 1},
}
