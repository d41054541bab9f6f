"""CIFAR-10, random 10 % forgetting, ResNet-18 (the paper's CIFAR-10 table).

Reproduces: Scissorhands against Retrain on CIFAR-10 with a random 10 % forget set
(4,500 of the 45,000 training images left after the validation hold-out): lr 5e-3,
10 epochs, sparsity 0.97, lambda 0.05, eligible layer3, layer4, fc, projection on
every joint step (the release's hyperparameters).

Commands (add --smoke to each for a run of seconds on a tiny ResNet and 512 images):
  pip install ".[prepare]"    # from a clone of this repository (not on PyPI)
  scissorhands prepare cifar10 --data-dir DATA
  C=experiments/configs/cifar10_random10.py RUN=runs/cifar10_random10
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
CONFIG = {"data": {"name": "cifar10"}, "model": {"num_classes": 10}}

SMOKE = RESNET_SMOKE
