"""Audit protocol digits_cnn_small: membership made measurable on the digits CNN.

The digits CNN without weight decay on random halves of the first 200 digits-10 training
digits memorises its 100 training examples. Each model forgets the 20 of the 40
candidates it trained on (20 %); Scissorhands re-initialises all but the first conv,
the paper's layer-restricted trim.

Methods: the hyperparameters of the digits comparison (one learning rate per method tuned
for the digits CNN on a seed never reported); Scissorhands trims everything but the first
conv ("all_but_first_conv").
`scissorhands tune` chooses others under one budget; `scissorhands audit --settings`
runs with its choice.

Command:
  scissorhands audit --protocol digits_cnn_small --quick --out DIR
Expected: minutes on a 2-core CPU (--quick); see docs/results.md for the measured table.
"""

ELIGIBLE = "all_but_first_conv"

CONFIG = {
    "protocol": {
        "pool_size": 200,
        "candidates": 40,
        "model": "digits_cnn",
        "epochs": 120,
        "lr": 0.05,
        "weight_decay": 0.0,
        "batch_size": 32,
        "why": "membership measurable on a convolutional model: the digits CNN without weight "
        "decay on halves of 200 digits memorises its 100 training examples; each model "
        "forgets 20 of them (20 %), and Scissorhands re-initialises all but the first conv",
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
