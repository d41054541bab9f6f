"""CIFAR-10, random 10 % forgetting, ResNet-18: a cell of the paper's CIFAR-10 table.

Reproduces: Scissorhands against Retrain with 4,500 of the 45,000 training images
forgotten, at the release's values below. Commands and expected time: _paper_resnet.py,
with C=cifar10_random10 (scissorhands train $C, unlearn $C,
evaluate $C).
"""

from _paper_resnet import cell

CONFIG, SMOKE = cell("cifar10", "random10")
