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

from _audit_methods import methods  # the family base beside this file

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
    "methods": methods(ELIGIBLE),
}
