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

from _audit_methods import methods  # the family base beside this file

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
    "methods": methods(ELIGIBLE),
}
