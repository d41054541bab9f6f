"""Audit protocol digits10: the digits CNN and schedule of `scissorhands compare`.

The digits CNN (SGD lr 0.05, weight decay 5e-4, batch 64, 30 epochs) on random halves of
all 1,437 digits-10 training digits; each model forgets the 143 of the 286 candidates it
trained on. Its models generalise so well that membership is barely measurable: the
audit is weak here by its own sanity rule.

Methods: the hyperparameters of the digits comparison (one learning rate per method tuned
for the digits CNN on a seed never reported); Scissorhands trims everything but the first
conv ("all_but_first_conv").
`scissorhands tune` chooses others under one budget; `scissorhands audit --settings`
runs with its choice.

Command:
  scissorhands audit --protocol digits10 --quick --out DIR
Expected: the untouched original's U-LiRA accuracy near 0.58 with 16 models (see
          docs/results.md for the measured table).
"""

ELIGIBLE = "all_but_first_conv"

CONFIG = {
    "protocol": {
        "pool_size": 1437,
        "candidates": 286,
        "model": "digits_cnn",
        "epochs": 30,
        "lr": 0.05,
        "weight_decay": 0.0005,
        "batch_size": 64,
        "why": "the comparison's protocol: the digits CNN on halves of the 1,437 training "
        "digits; its models generalise so well that membership is barely measurable",
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
