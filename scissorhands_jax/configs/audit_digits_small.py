"""Audit protocol digits_small (the default): membership made measurable on a wide MLP.

A wide MLP (two hidden ReLU layers of 512, no weight decay) on random halves of the first
400 digits-10 training digits memorises its 200 training examples, so a likelihood-ratio
attack can tell members from non-members. Each model forgets the 40 of the 80 candidates
it trained on (20 %).

Methods: the hyperparameters of the digits comparison (one learning rate per method tuned
for the digits CNN on a seed never reported); Scissorhands trims everything but the first
layer ("^(?!hidden1/)").
`scissorhands tune` chooses others under one budget; `scissorhands audit --settings`
runs with its choice.

Command:
  scissorhands audit --out DIR            # 64 models per role
  scissorhands audit --quick --out DIR    # 16 models, 7 methods
Expected: --quick 42 s on a quiet 2-core CPU; the untouched original's U-LiRA accuracy
          near 0.77 and Retrain's near 0.52 (see docs/results.md).
"""

ELIGIBLE = r"^(?!hidden1/)"

CONFIG = {
    "protocol": {
        "pool_size": 400,
        "candidates": 80,
        "model": "digits_mlp",
        "epochs": 80,
        "lr": 0.05,
        "weight_decay": 0.0,
        "batch_size": 64,
        "why": "membership made measurable: a wide MLP (two hidden layers of 512) without "
        "weight decay on halves of 400 digits memorises its 200 training examples; each "
        "model forgets 40 of them (20 %)",
    },
    "methods": {
        "ft": {"lr": 0.1, "epochs": 10, "batch_size": 64},
        "ga": {"lr": 0.03, "epochs": 5, "batch_size": 64},
        "rl": {"lr": 0.003, "epochs": 10, "batch_size": 64},
        "l1_sparse": {"alpha": 0.03, "lr": 0.01, "epochs": 10, "batch_size": 64},
        "salun": {"ratio": 0.5, "lr": 5e-3, "epochs": 10, "batch_size": 64},
        "iu": {"alpha": 100.0, "damping": 1.0, "fisher_examples": 256, "batch_size": 64},
        "be": {"lr": 1e-4, "epochs": 10, "batch_size": 64},
        "bs": {"bound": 0.1, "lr": 1e-4, "epochs": 10, "batch_size": 64},
        "scrub": {
            "lr": 5e-3,
            "epochs": 3,
            "max_epochs": 2,
            "batch_size": 64,
            "forget_batch_size": 32,
        },
        "scissorhands": {
            "eligible": ELIGIBLE,
            "lr": 1.5e-3,
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
    },
}
