"""CIFAR-100, random 50 % forgetting, ResNet-18: a cell of the paper's CIFAR-100 table.

Reproduces: Scissorhands against Retrain with 22,500 of the 45,000 training images
forgotten, at the release's values below. Commands and expected time: _paper_resnet.py,
with C=cifar100_random50 (scissorhands train $C, unlearn $C,
evaluate $C).
"""

from _paper_resnet import cell

CONFIG, SMOKE = cell("cifar100", "random50", eligible="layer4,fc", sparsity=0.9, lr=1e-3, lam=0.01)
