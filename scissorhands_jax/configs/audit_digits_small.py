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

from _audit_methods import methods  # the family base beside this file

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
    "methods": methods(ELIGIBLE),
}
