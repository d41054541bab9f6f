"""digits-10: the offline protocol (scikit-learn digits, no download).

Reproduces: the README's digits-10 table (Original, Retrain, Scissorhands; random10 and
class0; seeds 0, 1, 2; mean ± std).

Command:   scissorhands demo --out out/digits
Expected:  about a minute on a 2-core CPU; Scissorhands random10 UA ≈ 3, RA ≈ 98,
           TA ≈ 97; class0 UA = 100 (see the README for the measured table).

The CLI flags override these values one by one (``--lr``, ``--sparsity``, ...); the
library never reads this file: `scissorhands_jax.experiment.demo` holds the same defaults as
keyword arguments and this config is the record of what the table used.
"""

CONFIG = {
    "data": {
        "name": "digits10",
        "scenarios": ["random10", "class0"],
        "seeds": [0, 1, 2],
        "test_size": 360,  # perm = default_rng(0).permutation(1797); test = perm[:360]
        "random10_forget_size": 143,
    },
    "model": {"name": "DigitsCNN", "eligible": "all_but_first_conv"},
    "train": {  # Original and Retrain
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "epochs": 30,
    },
    "unlearn": {  # Scissorhands
        "lr": 5e-3,
        "epochs": 10,
        "sparsity": 0.97,
        "lam": 0.05,
        "memory_num": 1,
        "prune_num": 1,
        "batch_size": 64,
        "margin": 0.5,
        "eps": 1e-3,
        "projection": "gem",
        "project_every": 1,
        "reinit": "model",
    },
    "metrics": ["UA", "RA", "TA", "MIA_entropy", "MIA_confidence", "avg_gap", "rte_s"],
}
