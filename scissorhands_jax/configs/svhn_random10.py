"""SVHN, random 10 % forgetting, ResNet-18: a cell of the paper's SVHN table.

Reproduces: Scissorhands against Retrain with a random 10 % of the training images (tfds
svhn_cropped) forgotten, at the release's values below. Commands and expected time:
_paper_resnet.py, with C=svhn_random10 (scissorhands train $C,
unlearn $C, evaluate $C).
"""

from _paper_resnet import cell

CONFIG, SMOKE = cell("svhn_cropped", "random10", sparsity=0.9, lr=1e-3, lam=0.01)
