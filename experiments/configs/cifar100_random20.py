"""CIFAR-100, random 20 % forgetting, ResNet-18 (the paper's CIFAR-100 table).

Reproduces: Scissorhands against Retrain on CIFAR-100 with a random 20 % forget set
(9,000 of 45,000 training images): lr 5e-3, 10 epochs, sparsity 0.99, lambda 1.0,
eligible layer4, fc, projection on every joint step (the release's hyperparameters).

Commands (add --smoke to each for a run of seconds on a tiny ResNet and 512 images):
  pip install ".[prepare]"    # from a clone of this repository (not on PyPI)
  scissorhands prepare cifar100 --data-dir DATA
  C=experiments/configs/cifar100_random20.py RUN=runs/cifar100_random20
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
    "data": {"name": "cifar100", "forget": {"fraction": 0.2}},
    "model": {"num_classes": 100},
    "unlearn": {"eligible": "layer4,fc", "sparsity": 0.99, "lam": 1.0},
}

SMOKE = RESNET_SMOKE
