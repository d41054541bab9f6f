"""SVHN, class-wise forgetting of class 0, ResNet-18 (the paper's SVHN class-wise table).

Reproduces: Scissorhands against Retrain on SVHN forgetting every training image of class 0
(TA is measured on the test set without class 0): lr 1e-3, 10 epochs, sparsity 0.90,
lambda 0.1, eligible layer4, fc, projection on every joint step (the release's hyperparameters).

Commands (add --smoke to each for a run of seconds on a tiny ResNet and 512 images):
  pip install ".[prepare]"    # from a clone of this repository (not on PyPI)
  scissorhands prepare svhn_cropped --data-dir DATA
  C=experiments/configs/svhn_class0.py RUN=runs/svhn_class0
  scissorhands train $C --data-dir DATA --out $RUN
  scissorhands unlearn $C --data-dir DATA --run $RUN
  scissorhands evaluate $C --data-dir DATA --run $RUN
  scissorhands compare --setting $C --data-dir DATA --out $RUN-compare  # all methods vs Retrain

Expected:  not measured by this project (its machines have no GPU); the paper's
           Table reports this setting. Time: 182 + 160 ResNet-18 epochs dominate.
"""

from scissorhands_jax.config import RESNET_SMOKE

# Only what differs from the defaults in scissorhands_jax.config (the release's
# CIFAR-10 random-10 % setting); SMOKE only what differs from CONFIG.
CONFIG = {
    "data": {
        "name": "svhn_cropped",
        "forget": {"kind": "class", "fraction": None, "classes": [0]},
        "augment": False,
    },
    "model": {"num_classes": 10},
    "unlearn": {
        "augment": False,
        "eligible": "layer4,fc",
        "sparsity": 0.9,
        "lr": 0.001,
        "lam": 0.1,
    },
}

SMOKE = RESNET_SMOKE
